#!/usr/bin/env bash
# Create .venv and install losskernel_dist with what the tests need.
#   bash scripts/setup.sh          # Python packages only (enough for the demo)
#   bash scripts/setup.sh --system # also Debian packages for the full test suite
#                                  # (headless Chromium, WordNet 3.0, SLURM + MariaDB)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--system" ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends $(grep -v '^#' scripts/apt-packages.txt)
fi

PYTHON=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# torch 2.13.0 is the CPU build available offline here; pyproject accepts any torch >= 2.2.
python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
# the [hf] extra (transformers, tokenizers, datasets) for the Hugging Face task and its tests;
# the constraint keeps pip from replacing the torch installed above
python -m pip install -q -e ".[test,hf]" -c <(echo "torch==${TORCH_VERSION:-2.13.0}") 2>&1 | grep -v "^WARNING: Location" || true
python -c "import losskernel_dist, torch, zarr, dask, transformers; print('losskernel_dist ready: torch', torch.__version__, 'zarr', zarr.__version__, 'transformers', transformers.__version__)"
