"""Which draws count: the one rule, used by reduce, analysis, info and calibrate.

A draw is usable when its ``done`` flag is set (its loss vector is durably
written) and its chain is healthy (``chain_status`` OK: a diverged chain's
draws, even those written before the fault, are left out so that a kernel
never mixes a chain that was going astray). Everything that counts draws or
reads them for a kernel asks this module, so the reduce, the analysis's
convergence curve, ``losskernel info`` and the calibration's split-half CKA
always rest on the same draws.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..errors import StoreError
from ..store import STATUS_OK, RunStore, describe_damage


@dataclass(frozen=True)
class UsableDraws:
    """``mask`` (chains, draws): the usable draws; and why the others are not."""

    mask: np.ndarray
    done: np.ndarray
    healthy: np.ndarray

    @property
    def count(self) -> int:
        return int(self.mask.sum())

    @property
    def failed_chains(self) -> list[int]:
        return [int(c) for c in np.flatnonzero(~self.healthy)]

    @property
    def missing(self) -> int:
        """Draws of healthy chains that are not done yet."""
        return int((~self.done[self.healthy]).sum())

    @property
    def complete(self) -> bool:
        """Every chain healthy and every draw done: a kernel of the whole run."""
        return not self.failed_chains and not self.missing

    @property
    def chains_used(self) -> list[int]:
        return [int(c) for c in np.flatnonzero(self.mask.any(axis=1))]

    def flat_rows(self) -> np.ndarray:
        """Flat (chain * T + draw) indices of the usable draws, chain-major."""
        return np.flatnonzero(self.mask.reshape(-1))

    def digest(self) -> str:
        """sha256 of the usable draws' flat indices: which draws a kernel rests on."""
        return hashlib.sha256(self.flat_rows().astype("<i8").tobytes()).hexdigest()

    def not_done_rows(self) -> list[int]:
        """Flat indices of the draws of healthy chains that are not done."""
        draws = self.done.shape[1]
        return [int(i) for i in
                np.flatnonzero(~self.done.reshape(-1) & np.repeat(self.healthy, draws))]


def usable_draws(store: RunStore, *, check_chunks: bool = True) -> UsableDraws:
    """The usable draws of ``store`` now (see the module doc).

    With ``check_chunks`` (every reader of draws), a usable draw whose ``losses``
    chunk is missing is a StoreError: Zarr would read it as NaN, and a kernel of
    NaNs with exit 0 is the one outcome that must never happen.
    """
    done = store.done()
    healthy = store.chain_status() == STATUS_OK
    usable = UsableDraws(mask=done & healthy[:, None], done=done, healthy=healthy)
    if check_chunks:
        missing = store.missing_loss_chunks(usable.mask)
        if missing:
            raise StoreError(
                f"store {str(store.path)!r}: {describe_damage(missing)}: run 'losskernel "
                "sample CONFIG' (or 'losskernel verify RUN_DIR --repair') to recompute them"
            )
    return usable


@dataclass(frozen=True)
class KernelState:
    """Whether the stored kernel describes the run as it is now.

    ``partial``: reduced with --allow-partial from fewer than all draws.
    ``stale``: the usable draws changed since (sampling went on, or draws were
    lost): the kernel no longer matches the store and must be reduced again.
    """

    reduced: bool
    draws_used: int
    draws_usable: int
    partial: bool
    stale: bool

    def describe(self) -> str:
        if not self.reduced:
            return "not reduced"
        text = f"reduced from {self.draws_used} draws"
        if self.stale:
            return (f"STALE: {text}, but {self.draws_usable} draws are usable now: run "
                    "'losskernel reduce' again")
        return text + (" (partial: --allow-partial)" if self.partial else "")

    def as_dict(self) -> dict[str, object]:
        return {"reduced": self.reduced, "draws_used": self.draws_used,
                "draws_usable": self.draws_usable, "partial": self.partial, "stale": self.stale}


def kernel_state(store: RunStore) -> KernelState:
    """The stored kernel's state against the draws now usable (no chunk check: cheap)."""
    record = store.reduce_record
    usable = usable_draws(store, check_chunks=False)
    reduced = bool(record) and (store.has_kernel() or store.has_stream_neighbours())
    if not reduced:
        return KernelState(False, 0, usable.count, False, False)
    digest = record.get("usable_digest")
    stale = (digest != usable.digest()) if digest else record.get("draws_used") != usable.count
    return KernelState(True, int(record.get("draws_used", 0)), usable.count,
                       bool(record.get("partial", False)), bool(stale))
