#!/usr/bin/env bash
# GPU benchmark (bench/gpu.py: draws/s of an Inception-v1-sized job with and without the
# optimisations, its floor, and the paper's ImageNet job projected on 4 GPUs), run the way
# bench/device/run.sh runs it on a GPU machine without network or venv: that machine's
# python3, the carried wheels of bench/device/wheels/, a time budget, a JSON record in $OUT.
# The whole prepared run of issue 16 (GPU tests, CUDA resume, this, the reduce on the
# device, modular_full) is bench/device/run.sh itself.
#   bash bench/gpu.sh [--commit SHA] [--out DIR]
set -uo pipefail
exec bash "$(dirname "$0")/device/run.sh" --steps gpu_bench "$@"
