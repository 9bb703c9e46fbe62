#!/usr/bin/env bash
# launch/torchrun_imagenet_4gpu.sh - the paper's Section 4 kernel (Inception-v1, 10,000 ImageNet
# validation images, configs/imagenet_inception_v1.yaml) on one node with four GPUs.
#
#   IMAGENET_ROOT=/data/imagenet bash launch/torchrun_imagenet_4gpu.sh [--set KEY=VALUE ...]
#   IMAGENET_ROOT=/data/imagenet GOOGLENET_CHECKPOINT=/models/googlenet-1378be20.pth \
#       bash launch/torchrun_imagenet_4gpu.sh             # no internet: weights from a file
#
# A thin wrapper over launch/torchrun_single_node.sh (same signals, resume and env: PYTHON,
# OMP_NUM_THREADS): 4 ranks, `losskernel run`, so the 15 chains are dealt round-robin over the
# ranks (4, 4, 4, 3) and rank 0 reduces and analyses at the end. Run it from the repository root
# (the config's output, runs/imagenet_inception_v1, is relative to it); running it again
# resumes. The paper reports about three hours on four A100s.
#
# Memory per rank: the eval images decoded once (10,000 x 256 x 256 x 3 uint8 = 2 GB of host
# memory) and cached on the GPU as float32 (7.9 GB), plus GoogLeNet and its activations for a
# batch of 256 (eval.batch_size 500 for the loss vectors).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${IMAGENET_ROOT:?set IMAGENET_ROOT to the folder holding train/ and val/}"
EXTRA=(--set "task.args.root=$IMAGENET_ROOT")
if [[ -n "${GOOGLENET_CHECKPOINT:-}" ]]; then
    EXTRA+=(--set "task.args.checkpoint=$GOOGLENET_CHECKPOINT")
fi
export NPROC=${NPROC:-4}
export COMMAND=${COMMAND:-run}
exec bash launch/torchrun_single_node.sh configs/imagenet_inception_v1.yaml "${EXTRA[@]}" "$@"
