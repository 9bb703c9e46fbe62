#!/usr/bin/env bash
# Quick start, command 2: set up (Python and Debian packages, WordNet, test SLURM
# cluster) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --system
. .venv/bin/activate
[[ -f scripts/test-services.sh ]] && . scripts/test-services.sh
ruff check losskernel_dist tests bench
python -m pytest -q -ra
