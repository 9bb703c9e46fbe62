#!/usr/bin/env bash
# GPU benchmark (one GPU, < 8 minutes): draws/s of an Inception-v1-sized job with and
# without the optimizations, and the projected time of the paper's ImageNet job on 4 GPUs.
#   bash bench/gpu.sh            # needs a CUDA machine; installs torchvision if missing
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] || python3 -m venv .venv
. .venv/bin/activate
python -c "import torchvision" 2>/dev/null || pip install -q torchvision
pip install -q -e . 2>/dev/null || true
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
PYTHONPATH=bench timeout 480 python bench/gpu.py "$@"
