# `make demo` and `make test` each set up .venv by themselves on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# torch first, from an exact pin: a bare `torch` would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
EXTRAS ?= dev,ray,train
BIN := $(VENV)/bin
STAMP := $(VENV)/.longmix-installed
DEMO := build/demo

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
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

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check longmix tests

bench: install
	$(BIN)/python tests/bench/bench_near_dedup_quality.py
	$(BIN)/python tests/bench/bench_near_dedup_throughput.py --workers 2

clean:
	rm -rf build
