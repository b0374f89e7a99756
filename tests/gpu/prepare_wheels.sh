#!/usr/bin/env bash
# Wheels the GPU machine lacks (its image: Python 3.12, torch 2.11 + CUDA, transformers 5.17, no DeepSpeed,
# no pydantic), gathered here into .whl/ (git-ignored through .git/info/exclude) for the device call's
# `carry`. DeepSpeed is built here from its source distribution without its ops (they JIT-build, or
# torch's AdamW is used when nvcc is missing), so the wheel is pure Python.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
PY=${PY:-.venv/bin/python}
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation "deepspeed==0.19.8" -w .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "pydantic==2.14.4" "pydantic-core==2.50.5" "annotated-types==0.8.0" "typing-inspection==0.4.5" "hjson==3.1.0"
ls -la .whl
du -sh .whl
