"""The ``verify`` job: check a whole run for damage, and with ``repair`` make it recomputable.

It reads every chunk of ``losses`` (crc32c and decompression), checks that every
draw marked done has its chunks, reads the other arrays of the store, and loads
every chain checkpoint (its checksum included). ``repair`` then marks the
draws of missing or corrupt chunks not done and deletes the corrupt chunk
files (a partial write into a corrupt chunk would fail its read), and removes
damaged checkpoints, so that ``losskernel sample`` recomputes exactly what was
lost, bitwise, from the newest intact checkpoint before it (or from w*).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..rundir import RunDir
from ..store import DamagedChunk

SMALL_ARRAYS = ("done", "chain_status", "train_loss", "distance", "eval_mean", "labels")


@dataclass
class VerifyReport:
    """What ``verify_run`` found (and, with ``repair``, what it changed)."""

    run_dir: Path
    damaged_draws: list[DamagedChunk] = field(default_factory=list)
    damaged_arrays: list[str] = field(default_factory=list)
    damaged_checkpoints: list[str] = field(default_factory=list)
    repaired: bool = False

    @property
    def intact(self) -> bool:
        return not (self.damaged_draws or self.damaged_arrays or self.damaged_checkpoints)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir), "intact": self.intact, "repaired": self.repaired,
            "damaged_draws": [{"chain": d.chain, "draw": d.draw, "file": str(d.file),
                               "kind": d.kind} for d in self.damaged_draws],
            "damaged_arrays": self.damaged_arrays,
            "damaged_checkpoints": self.damaged_checkpoints,
        }

    def summary(self) -> str:
        if self.intact:
            return f"run {self.run_dir}: every chunk and checkpoint verified"
        parts = []
        if self.damaged_draws:
            chains = sorted({d.chain for d in self.damaged_draws})
            parts.append(f"{len(self.damaged_draws)} draws of chains {chains} in damaged "
                         f"losses chunks (first {self.damaged_draws[0].file})")
        if self.damaged_arrays:
            parts.append(f"damaged arrays {self.damaged_arrays}")
        if self.damaged_checkpoints:
            parts.append(f"damaged checkpoints {self.damaged_checkpoints}")
        return f"run {self.run_dir}: " + "; ".join(parts)


def _checkpoint_damage(run: RunDir) -> list[str]:
    if not run.checkpoints.is_dir():
        return []
    from ..checkpoint import read_checkpoint  # torch: only this job and sampling need it

    bad = []
    for path in sorted(run.checkpoints.glob("chain_*.p*")):
        try:
            read_checkpoint(path)
        except Exception as exc:  # noqa: BLE001 - any failure to load is damage
            bad.append(f"{path.name} ({str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__})")
    return bad


def verify_run(run_dir: str | Path, *, repair: bool = False) -> VerifyReport:
    """Check the store and checkpoints of ``run_dir``; with ``repair`` make damage recomputable."""
    run = RunDir(Path(run_dir))
    store = run.open_store(mode="r+" if repair else "r")
    report = VerifyReport(run_dir=run.path)
    for name in SMALL_ARRAYS:
        if name in store.group:
            try:
                store.read_whole(name)
            except StoreError:
                report.damaged_arrays.append(name)
    if "done" in report.damaged_arrays:
        raise StoreError(f"run {str(run.path)!r}: its 'done' flags are damaged, so which draws "
                         "exist is unknown: sample it again into a new output")
    corrupt = store.corrupt_loss_chunks()
    done = store.done()
    missing = store.missing_loss_chunks(done)
    report.damaged_draws = sorted(
        [d for d in corrupt if done[d.chain, d.draw]] + missing, key=lambda d: (d.chain, d.draw))
    report.damaged_checkpoints = _checkpoint_damage(run)
    if repair and not report.intact:
        for item in corrupt:
            item.file.unlink(missing_ok=True)
        for chain in sorted({d.chain for d in report.damaged_draws}):
            store.unmark_done(chain, sorted({d.draw for d in report.damaged_draws
                                             if d.chain == chain}))
        for entry in report.damaged_checkpoints:
            (run.checkpoints / entry.split(" ", 1)[0]).unlink(missing_ok=True)
        report.repaired = True
    return report
