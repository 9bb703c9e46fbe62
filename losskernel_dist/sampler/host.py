"""Copies of device tensors to the host that the background writer may keep.

What a chain hands to the writer must be owned by it: the chain goes on
updating its tensors (possibly in place) while queued commits wait. On CUDA
the copies go to pinned (page-locked) host memory with ``non_blocking=True``,
so that they run as DMA transfers without a pageable staging copy, and the
host waits only once, on a CUDA event recorded after the last copy, at the
point where the values are handed over. Pinned blocks come from torch's
caching host allocator: each copy gets its own block, which is reused once
the writer has dropped it. On the CPU the copies are ordinary clones.
"""

from __future__ import annotations

import numpy as np
import torch


def _pinned_copies(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Non-blocking copies of CUDA tensors into fresh pinned buffers, complete on return."""
    out = []
    for t in tensors:
        buf = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
        buf.copy_(t.detach(), non_blocking=True)
        out.append(buf)
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(tensors[0].device))
    done.synchronize()  # the one host sync: at the hand-off, after every copy is queued
    return out


def host_array(t: torch.Tensor) -> np.ndarray:
    """``t`` as a NumPy array the caller owns (a copy on CUDA; the tensor itself on the CPU).

    On the CPU ``t`` must be a fresh result (as ``torch.cat`` gives) that nothing
    else writes to: its memory is shared, not copied, as ``t.cpu().numpy()`` did.
    """
    if t.device.type == "cuda":
        return _pinned_copies([t])[0].numpy()
    return t.detach().numpy()


def host_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies of ``tensors`` that nothing else references (cloned even on the CPU)."""
    if not tensors:
        return {}
    values = list(tensors.values())
    if any(v.device.type == "cuda" for v in values):
        cuda = [v for v in values if v.device.type == "cuda"]
        pinned = iter(_pinned_copies(cuda))
        return {k: next(pinned) if v.device.type == "cuda" else v.detach().clone()
                for k, v in tensors.items()}
    return {k: v.detach().clone() for k, v in tensors.items()}
