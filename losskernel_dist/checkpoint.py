"""Chain state on disk for resume: the only module that knows checkpoint files.

One file per chain holds its parameters, the number of SGLD steps taken and
the draw-changing config fingerprint. Files are written atomically (temporary
file, fsync, rename) and the previous one is kept, so a kill during a write
leaves either the new or the old state, never a torn one. They are loaded with
``torch.load(weights_only=True)``: a checkpoint cannot run code.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class ChainState:
    """What a chain needs to continue: parameters after ``step`` SGLD steps."""

    chain: int
    step: int
    params: dict[str, torch.Tensor]
    fingerprint: str


def chain_path(directory: Path, chain: int) -> Path:
    return Path(directory) / f"chain_{chain:05d}.pt"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_chain(directory: Path, state: ChainState) -> Path:
    """Write a chain's state atomically, keeping the previous file as ``.prev``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = chain_path(directory, state.chain)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    payload = {
        "chain": state.chain,
        "step": state.step,
        "fingerprint": state.fingerprint,
        "params": {k: v.detach().cpu() for k, v in state.params.items()},
    }
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if path.exists():
        os.replace(path, path.with_suffix(".prev"))
    os.replace(tmp, path)
    _fsync_dir(directory)
    return path


def _read(path: Path) -> ChainState:
    data = torch.load(path, map_location="cpu", weights_only=True)
    return ChainState(
        chain=int(data["chain"]),
        step=int(data["step"]),
        params=dict(data["params"]),
        fingerprint=str(data["fingerprint"]),
    )


def load_chain(directory: Path, chain: int) -> ChainState | None:
    """The newest readable state of ``chain``, falling back to ``.prev``; None if none."""
    path = chain_path(directory, chain)
    for candidate in (path, path.with_suffix(".prev")):
        if not candidate.exists():
            continue
        try:
            state = _read(candidate)
        except Exception as exc:  # a truncated or corrupted file: try the older one
            warnings.warn(f"checkpoint {candidate} unreadable ({exc}); trying an older one",
                          stacklevel=2)
            continue
        if state.chain != chain:
            warnings.warn(f"checkpoint {candidate} belongs to chain {state.chain}; ignored",
                          stacklevel=2)
            continue
        return state
    return None
