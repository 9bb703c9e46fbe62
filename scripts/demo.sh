#!/usr/bin/env bash
# Quick start, command 1: set up and compute a real loss kernel of the paper's
# modular-arithmetic transformer (shipped checkpoint), with its figures and report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
losskernel run configs/demo_modular.yaml "$@"
echo "report: runs/demo_modular/analysis/index.html"
