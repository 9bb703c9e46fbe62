"""Chain state on disk for resume: the only module that knows checkpoint files.

One file per chain holds its parameters, the number of SGLD steps taken and
the draw-changing config fingerprint. The step is also the chain's randomness
counter: minibatches and noise are keyed by (seed, chain, step) (rng.py), so
nothing else is needed to continue exactly. Files are written atomically
(temporary file, fsync, rename, fsync of the directory) and the previous one is
kept as ``.prev``, so a kill during a write leaves the new or the old state,
never a torn one, and a file damaged later falls back to the previous one.
They are loaded with ``torch.load(weights_only=True)``: a checkpoint cannot
run code.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint_meta import chain_path, remove_sidecar, sidecar_step, write_sidecar
from .fsio import fsync_path


@dataclass
class ChainState:
    """What a chain needs to continue: parameters after ``step`` SGLD steps."""

    chain: int
    step: int
    params: dict[str, torch.Tensor]
    fingerprint: str



def params_checksum(chain: int, step: int, fingerprint: str,
                    params: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the state: chain, step, fingerprint and every tensor's name, dtype,
    shape and bytes. Stored in the file and checked on load, so a flipped bit in the
    parameters is a damaged checkpoint, never a silently different chain."""
    digest = hashlib.sha256(f"{chain}|{step}|{fingerprint}".encode())
    for name in sorted(params):
        tensor = params[name].detach().cpu().contiguous()
        digest.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class DamagedCheckpoint(ValueError):
    """A checkpoint whose stored checksum does not match its contents."""


def save_chain(directory: Path, state: ChainState) -> Path:
    """Write a chain's state atomically, keeping the previous file as ``.prev``, then its
    sidecar (checkpoint_meta.py; a kill in between leaves a sidecar that no longer
    matches the file, which readers then ignore)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = chain_path(directory, state.chain)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    params = {k: v.detach().cpu() for k, v in state.params.items()}
    payload = {
        "chain": state.chain,
        "step": state.step,
        "fingerprint": state.fingerprint,
        "params": params,
        "checksum": params_checksum(state.chain, state.step, state.fingerprint, params),
    }
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if path.exists():
        os.replace(path, path.with_suffix(".prev"))
    os.replace(tmp, path)
    fsync_path(directory)
    write_sidecar(directory, state.chain, state.step, state.fingerprint)
    return path


def read_checkpoint(path: Path) -> ChainState:
    data = torch.load(path, map_location="cpu", weights_only=True)
    state = ChainState(
        chain=int(data["chain"]),
        step=int(data["step"]),
        params=dict(data["params"]),
        fingerprint=str(data["fingerprint"]),
    )
    stored = data.get("checksum")  # absent only in checkpoints written before checksums
    if stored is not None and stored != params_checksum(state.chain, state.step,
                                                        state.fingerprint, state.params):
        raise DamagedCheckpoint("checksum mismatch: the file was changed after it was written")
    return state


def chain_states(directory: Path, chain: int) -> list[tuple[Path, ChainState]]:
    """The readable states of ``chain``, newest file first (current, then ``.prev``).

    A truncated or corrupted file, or one that belongs to another chain, is
    skipped with a warning.
    """
    path = chain_path(directory, chain)
    out = []
    for candidate in (path, path.with_suffix(".prev")):
        if not candidate.exists():
            continue
        try:
            state = read_checkpoint(candidate)
        except Exception as exc:  # a truncated or corrupted file: try the older one
            message = f"checkpoint {candidate} unreadable ({exc}); trying an older one"
            warnings.warn(message, stacklevel=2)
            print(f"losskernel: {message}", file=sys.stderr)
            continue
        if state.chain != chain:
            warnings.warn(f"checkpoint {candidate} belongs to chain {state.chain}; ignored",
                          stacklevel=2)
            continue
        out.append((candidate, state))
    return out


def load_chain(directory: Path, chain: int) -> ChainState | None:
    """The newest readable state of ``chain``, falling back to ``.prev``; None if none."""
    states = chain_states(directory, chain)
    return states[0][1] if states else None


def restore(
    directory: Path, chain: int, accept: Callable[[ChainState], bool]
) -> ChainState | None:
    """The newest readable state of ``chain`` that ``accept`` takes; None to start afresh.

    Called by the chain's (locked) writer before it resumes. Files newer than
    the accepted state (unreadable, or refused by ``accept``) are removed, and
    an accepted ``.prev`` becomes the current file, so the next save keeps the
    accepted state as its ``.prev``. Temporary files of killed writes are
    removed too. ``accept`` may raise to refuse the whole directory.
    """
    directory = Path(directory)
    path = chain_path(directory, chain)
    for tmp in directory.glob(f"{path.stem}.tmp*"):
        tmp.unlink(missing_ok=True)
    chosen: tuple[Path, ChainState] | None = None
    for candidate, state in chain_states(directory, chain):
        if accept(state):
            chosen = (candidate, state)
            break
    prev = path.with_suffix(".prev")
    changed = False
    if chosen is None:
        remove_sidecar(directory, chain)
        for stale in (path, prev):
            if stale.exists():
                stale.unlink()
                changed = True
    elif chosen[0] == prev:
        os.replace(prev, path)  # atomically drops the rejected or unreadable current file
        changed = True
    if changed:
        fsync_path(directory)
    if chosen is not None and sidecar_step(directory, chain) != chosen[1].step:
        state = chosen[1]  # a promoted .prev, or a checkpoint written before sidecars
        write_sidecar(directory, chain, state.step, state.fingerprint)
    return chosen[1] if chosen else None
