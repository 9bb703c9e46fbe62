#!/usr/bin/env bash
# launch/torchrun_single_node.sh - losskernel on one node, one rank per GPU (four by default).
#
#   bash launch/torchrun_single_node.sh CONFIG [--set KEY=VALUE ...]
#   NPROC=8 COMMAND=run bash launch/torchrun_single_node.sh CONFIG
#
# Each rank reads RANK / WORLD_SIZE / LOCAL_RANK from torchrun, runs on cuda:LOCAL_RANK (CPU with
# gloo when there is no GPU) and samples its share of the chains; ranks meet only at a barrier
# before and after sampling. COMMAND is `sample` (default) or `run` (sample, then reduce and
# analyse on rank 0). Re-running the same command resumes an interrupted run.
#
# Stopping: Ctrl-C or SIGTERM to this script (it execs torchrun) reaches every rank; each
# checkpoints its chain after the current SGLD step and exits with status 75.
#
# Env: NPROC (ranks, default 4), COMMAND (sample), PYTHON (python), OMP_NUM_THREADS (CPU
# threads per rank, default: cores / NPROC).
set -euo pipefail
CONFIG=${1:?usage: launch/torchrun_single_node.sh CONFIG [--set KEY=VALUE ...]}
shift
NPROC=${NPROC:-4}
COMMAND=${COMMAND:-sample}
PYTHON=${PYTHON:-python}
THREADS=$(( $(nproc) / NPROC ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( THREADS > 0 ? THREADS : 1 ))}
exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" \
    -m losskernel_dist.cli "$COMMAND" "$CONFIG" "$@"
