#!/usr/bin/env bash
# launch/torchrun_multi_node.sh - losskernel on several nodes: run this same command on every node.
#
#   NNODES=2 RDZV_HOST=node0 bash launch/torchrun_multi_node.sh CONFIG [--set KEY=VALUE ...]
#
# Every node starts one torchrun agent with NPROC ranks; the agents meet through torchrun's c10d
# rendezvous at RDZV_HOST:RDZV_PORT (any one of the nodes, reachable from all) and number the
# ranks 0 .. NNODES*NPROC-1. Chains are dealt round-robin over all ranks; each rank writes only
# its own chains, so the run directory (and CONFIG) must be on a file system every node shares.
# The draws are the same as those of a single process. Under SLURM use slurm/torchrun.sbatch,
# which does this with srun, or `losskernel submit` for job arrays.
#
# Env: NNODES (required), RDZV_HOST (required), RDZV_PORT (29500), RDZV_ID (a job name the
# nodes share, default losskernel), NPROC (ranks per node, default 4), COMMAND (sample or run),
# PYTHON (python), OMP_NUM_THREADS (default: cores / NPROC).
set -euo pipefail
CONFIG=${1:?usage: NNODES=N RDZV_HOST=host launch/torchrun_multi_node.sh CONFIG [--set KEY=VALUE ...]}
shift
: "${NNODES:?set NNODES, the number of nodes}"
: "${RDZV_HOST:?set RDZV_HOST, the host of the rendezvous (one of the nodes)}"
RDZV_PORT=${RDZV_PORT:-29500}
RDZV_ID=${RDZV_ID:-losskernel}
NPROC=${NPROC:-4}
COMMAND=${COMMAND:-sample}
PYTHON=${PYTHON:-python}
THREADS=$(( $(nproc) / NPROC ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( THREADS > 0 ? THREADS : 1 ))}
exec "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --nproc_per_node="$NPROC" \
    --rdzv_backend=c10d --rdzv_endpoint="$RDZV_HOST:$RDZV_PORT" --rdzv_id="$RDZV_ID" \
    -m losskernel_dist.cli "$COMMAND" "$CONFIG" "$@"
