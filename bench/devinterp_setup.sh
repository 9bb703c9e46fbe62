#!/usr/bin/env bash
# Create .venv-devinterp: devinterp 2.0.1 beside the same torch build as .venv (2.13.0),
# for bench/devinterp.py. Run from anywhere; takes a minute or two (datasets and
# transformers are devinterp's largest dependencies).
#
#   bash bench/devinterp_setup.sh            # then: python bench/devinterp.py
#
# torch is installed first and pinned with a constraint, so that resolving devinterp's
# own requirements ("torch>=2.0.1", transformers, datasets, xarray, zarr>=3) never pulls
# another torch. losskernel_dist is not installed there: the benchmark puts the
# repository root on PYTHONPATH (the devinterp child needs only losskernel_dist.task,
# which imports numpy and torch, and examples/text_task.py).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-devinterp"
torch_version="${TORCH_VERSION:-2.13.0}"

base_python="python3"
if [[ -x "$root/.venv/bin/python" ]]; then  # the same interpreter as .venv
    base_python="$("$root/.venv/bin/python" -c 'import sys; print(sys._base_executable)')"
fi
[[ -x "$venv/bin/python" ]] || "$base_python" -m venv "$venv"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==$torch_version" > "$constraints"
"$venv/bin/pip" install -q "torch==$torch_version"
"$venv/bin/pip" install -q -c "$constraints" "devinterp==2.0.1"
"$venv/bin/python" - <<'EOF'
import importlib.metadata as md
import torch
print(f"ok: devinterp {md.version('devinterp')}, torch {torch.__version__} in {__import__('sys').prefix}")
EOF
