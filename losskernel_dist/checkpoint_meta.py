"""Checkpoint files without torch: their names and the JSON sidecar of each chain's checkpoint.

``checkpoint.py`` writes and reads the checkpoints themselves (torch). Beside
each chain's current file ``chain_NNNNN.pt`` it also writes, through
``write_sidecar``, a small ``chain_NNNNN.json`` with the chain, its step, the
config fingerprint, and the size and modification time of the file it
describes. ``losskernel info`` reads the step from there (``sidecar_step``),
so that showing how far each chain got needs neither torch (a second or more
to import) nor reading every checkpoint.

The sidecar is trusted only while the file it describes is the one on disk
(same size and mtime): a kill between the checkpoint's rename and the
sidecar's write, a ``.prev`` promoted on resume or a truncated file all make
it disagree, and the caller then reads the checkpoint itself (as it must for
checkpoints written before sidecars existed).
"""

from __future__ import annotations

import json
from pathlib import Path

from .rundir import atomic_write


def chain_path(directory: Path, chain: int) -> Path:
    """The current checkpoint file of ``chain`` (the previous one is its ``.prev``)."""
    return Path(directory) / f"chain_{chain:05d}.pt"


def sidecar_path(directory: Path, chain: int) -> Path:
    """The JSON file that describes ``chain``'s current checkpoint."""
    return Path(directory) / f"chain_{chain:05d}.json"


def has_checkpoint(directory: Path, chain: int) -> bool:
    """Whether ``chain`` has a checkpoint file (current or ``.prev``), readable or not."""
    path = chain_path(directory, chain)
    return path.exists() or path.with_suffix(".prev").exists()


def write_sidecar(directory: Path, chain: int, step: int, fingerprint: str) -> None:
    """Describe the checkpoint now at ``chain_path`` (holding ``step``) in its sidecar,
    atomically."""
    stat = chain_path(directory, chain).stat()
    record = {"chain": chain, "step": step, "fingerprint": fingerprint,
              "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    atomic_write(sidecar_path(directory, chain), json.dumps(record) + "\n")


def remove_sidecar(directory: Path, chain: int) -> None:
    """Drop ``chain``'s sidecar (its checkpoints were discarded)."""
    sidecar_path(directory, chain).unlink(missing_ok=True)


def sidecar_step(directory: Path, chain: int) -> int | None:
    """The step the sidecar records if it describes the checkpoint on disk; else None."""
    try:
        record = json.loads(sidecar_path(directory, chain).read_text())
        stat = chain_path(directory, chain).stat()
    except (OSError, ValueError):
        return None
    same_file = (isinstance(record, dict) and record.get("chain") == chain
                 and isinstance(record.get("step"), int)
                 and record.get("size") == stat.st_size
                 and record.get("mtime_ns") == stat.st_mtime_ns)
    return record["step"] if same_file else None
