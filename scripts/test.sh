#!/usr/bin/env bash
# Quick start, command 2: set up everything the tests need and run them all.
#   - .venv with the package (torch 2.13.0 CPU) and test tools
#   - Debian packages: headless Chromium (report test), WordNet 3.0 (copied for NLTK)
#   - a real single-node SLURM cluster on 127.0.0.1 (slurm/test-cluster.sh)
#   - .venv-vision with torch 2.14.1 + torchvision 0.29.1 for the Inception-v1 path
#     (skip it with LOSSKERNEL_SKIP_VISION=1)
# Then: ruff, and python -m pytest -q (the vision tests in their own venv).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --system
. .venv/bin/activate

export LOSSKERNEL_NLTK_DATA=${LOSSKERNEL_NLTK_DATA:-$PWD/.cache/nltk_data}
export NLTK_DATA=$LOSSKERNEL_NLTK_DATA
python -m losskernel_dist.analysis.wordnet setup "$NLTK_DATA"

bash slurm/test-cluster.sh || echo "SLURM test cluster did not come up: its tests will skip"

ruff check losskernel_dist tests bench examples
python -m pytest -q -ra

if [[ "${LOSSKERNEL_SKIP_VISION:-0}" != 1 ]]; then
    [[ -x .venv-vision/bin/python ]] || python3 -m venv .venv-vision
    .venv-vision/bin/pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "^WARNING: Location" || true
    .venv-vision/bin/pip install -q -e ".[test,vision]" 2>&1 | grep -v "^WARNING: Location" || true
    .venv-vision/bin/python -m pytest -q -ra tests/tasks/test_imagenet.py tests/config/test_configs.py tests/bench/test_bench_gpu.py
fi
