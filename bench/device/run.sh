#!/usr/bin/env bash
# The GPU machine's one prepared run (issue 16): bench/device/run.py with that machine's
# python3 (torch with CUDA is there; the rest comes from the carried bench/device/wheels/),
# writing device_run.json and device_run.log into $OUT. Needs no network and no venv.
#   bash bench/device/run.sh --commit SHA          # on the GPU machine
#   bash bench/device/run.sh --dry-run --out DIR   # on a CPU: the same steps at toy sizes
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
[[ -n "${VIRTUAL_ENV:-}" ]] && PY=python
exec "$PY" bench/device/run.py "$@"
