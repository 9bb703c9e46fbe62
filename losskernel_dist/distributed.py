"""Where this process runs and which chains it owns: the only reader of rank variables.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; a SLURM array task is told its
share explicitly. Chains are dealt round-robin, and since every draw depends
only on (seed, chain, step), the layout never changes the draws.

Ranks talk to each other only at two barriers (after the store exists, and at
the end); sampling itself has no collective communication. The barrier
timeout is long because ranks with more chains, or with more draws left on a
resume, make the others wait at the final barrier; a rank that dies is noticed
by torchrun, which stops the rest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from .errors import ConfigError

BARRIER_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class Placement:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def placement_from_env() -> Placement:
    """Rank, world size and local rank from torchrun's variables (1 process if unset)."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise RuntimeError(f"bad RANK/WORLD_SIZE/LOCAL_RANK in the environment: {exc}") from exc
    if world < 1 or not 0 <= rank < world:
        raise RuntimeError(f"inconsistent RANK={rank} WORLD_SIZE={world}")
    return Placement(rank=rank, world_size=world, local_rank=local)


def chains_for(rank: int, world_size: int, chains: int) -> list[int]:
    """The chains rank ``rank`` of ``world_size`` runs (round-robin)."""
    return list(range(rank, chains, world_size))


def slurm_cpus_per_task() -> int | None:
    """CPUs SLURM gave each task of this job (SLURM_CPUS_PER_TASK), or None outside SLURM."""
    value = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def select_device(spec: str, local_rank: int, key: str = "sampler.device") -> torch.device:
    """The torch device for ``spec`` ('auto', 'cpu', 'cuda', 'cuda:K') on this local rank.

    A CUDA device this machine does not have is a ConfigError naming ``key``.
    """
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"{key}={spec}: CUDA is not available here (torch {torch.__version__}, "
            f"{'built without CUDA' if torch.version.cuda is None else 'no GPU visible'}): "
            f"set {key} to cpu or auto"
        )
    count = torch.cuda.device_count()
    if spec == "cuda":
        return torch.device("cuda", local_rank % count)
    device = torch.device(spec)
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"{key}={spec}: this machine has {count} CUDA device(s) (cuda:0 to "
            f"cuda:{count - 1}): choose one of them, cuda or auto"
        )
    return device


class ProcessGroup:
    """torch.distributed around sampling: init, barriers at start and end, nothing between."""

    def __init__(self, placement: Placement, device: torch.device) -> None:
        self.placement = placement
        self.device = device
        self.active = placement.world_size > 1
        if self.active and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend, timeout=BARRIER_TIMEOUT)

    def barrier(self) -> None:
        """Wait for every rank (a no-op in a single process)."""
        if not self.active:
            return
        if self.device.type == "cuda":
            torch.distributed.barrier(device_ids=[self.device.index or 0])
        else:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
