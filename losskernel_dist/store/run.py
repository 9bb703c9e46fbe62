"""``RunStore``: one run's ``store.zarr``, its creation, the sampling arrays and its attrs.

This module creates the store with every sampling array preallocated (the
layout is in ``layout``), writes and reads the draws, per-step train losses,
per-draw summaries and chain status, and gives typed access to the group's
attributes, so that no other module spells their keys. The other groups are
mixed in from their own modules: damage to the ``losses`` chunks
(``damage``), the reference at w* (``reference``), the kernel (``kernel``),
the streamed neighbour lists (``neighbours``) and the analysis' outputs
(``analysis``); each needs only the ``group`` and ``path`` held here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..errors import StoreError
from ..fsio import fsync_path
from .analysis import AnalysisOutputs
from .damage import LossDamage
from .kernel import Kernel
from .layout import (
    STATUS_FAILED,
    STATUS_OK,
    array_codecs,
    losses_chunk_folder,
    losses_chunks,
    store_lock,
)
from .neighbours import StreamNeighbours
from .reference import Reference


class RunStore(LossDamage, Reference, Kernel, StreamNeighbours, AnalysisOutputs):
    """Read and write access to one run's ``store.zarr``."""

    def __init__(self, group: zarr.Group, path: Path) -> None:
        self.group = group
        self.path = path

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        chains: int,
        draws: int,
        n: int,
        total_steps: int,
        config: Mapping[str, Any],
        labels: np.ndarray | None = None,
        label_names: list[str] | None = None,
        attributes: Mapping[str, np.ndarray] | None = None,
        extra_attrs: Mapping[str, Any] | None = None,
    ) -> RunStore:
        """Create the store with every sampling array preallocated; refuses an existing one."""
        path = Path(path)
        if path.exists():
            raise StoreError(f"store {str(path)!r} already exists")
        group = zarr.open_group(str(path), mode="w-", zarr_format=3)
        codecs = array_codecs()
        group.create_array(
            "losses",
            shape=(chains, draws, n),
            chunks=losses_chunks(chains, draws, n),
            dtype="float32",
            fill_value=np.nan,
            dimension_names=("chain", "draw", "sample"),
            **codecs,
        )
        group.create_array(
            "done",
            shape=(chains, draws),
            chunks=(1, draws),
            dtype="bool",
            fill_value=False,
            dimension_names=("chain", "draw"),
            **codecs,
        )
        group.create_array(
            "train_loss",
            shape=(chains, total_steps),
            chunks=(1, min(total_steps, 65536)),
            dtype="float32",
            fill_value=np.nan,
            dimension_names=("chain", "step"),
            **codecs,
        )
        for name in ("distance", "eval_mean"):
            group.create_array(
                name,
                shape=(chains, draws),
                chunks=(1, draws),
                dtype="float32",
                fill_value=np.nan,
                dimension_names=("chain", "draw"),
                **codecs,
            )
        group.create_array(
            "chain_status",
            shape=(chains,),
            chunks=(1,),
            dtype="int8",
            fill_value=STATUS_OK,
            dimension_names=("chain",),
            **codecs,
        )
        if labels is not None:
            arr = group.create_array(
                "labels", shape=(n,), chunks=(min(n, 1 << 20),), dtype="int64",
                dimension_names=("sample",), **codecs,
            )
            arr[:] = np.asarray(labels, dtype=np.int64)
        if attributes:
            sub = group.create_group("attributes")
            for key, values in attributes.items():
                values = np.asarray(values)
                if values.dtype.kind not in "biuf":
                    values = values.astype(str)
                    values = np.asarray(values, dtype=np.dtypes.StringDType())
                arr = sub.create_array(
                    key, shape=values.shape, chunks=values.shape or (1,), dtype=values.dtype,
                    dimension_names=("sample",) + tuple(f"dim_{i}" for i in range(1, values.ndim)),
                )
                arr[...] = values
        group.attrs.update(
            {
                "config": dict(config),
                "label_names": list(label_names) if label_names is not None else None,
                "chain_errors": {},
                **dict(extra_attrs or {}),
            }
        )
        return cls(group, path)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> RunStore:
        """Open an existing store (``mode`` 'r' or 'r+')."""
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"no store at {str(path)!r} (expected a Zarr v3 group)")
        return cls(zarr.open_group(str(path), mode=mode, zarr_format=3), path)

    # ------------------------------------------------------------------ shape
    @property
    def shape(self) -> tuple[int, int, int]:
        """(chains, draws, N)."""
        return tuple(self.group["losses"].shape)  # type: ignore[return-value]

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.group.attrs["config"])

    @property
    def attrs(self) -> Mapping[str, Any]:
        return self.group.attrs

    def set_attrs(self, **values: Any) -> None:
        self.group.attrs.update(values)

    # Typed accessors of the group's attributes: no other module spells their keys.
    @property
    def fingerprints(self) -> dict[str, str]:
        """What the run is tied to besides its config (model, eval set...), key -> hash."""
        return dict(self.group.attrs.get("fingerprints", {}))

    @property
    def n_train(self) -> int | None:
        """The size n of the training set the chains were sampled on."""
        value = self.group.attrs.get("n_train")
        return None if value is None else int(value)

    @property
    def reduce_record(self) -> dict[str, Any]:
        """What the last reduce wrote: engine, draws_used, chains_used, seconds...; {} before."""
        return dict(self.group.attrs.get("reduce", {}))

    def set_reduce_record(self, record: Mapping[str, Any]) -> None:
        self.group.attrs["reduce"] = dict(record)

    @property
    def draws_used(self) -> int:
        """Draws the stored kernel rests on (0 before a reduce)."""
        return int(self.reduce_record.get("draws_used", 0))

    # ------------------------------------------------------------------ sampling writes
    def write_draws(self, chain: int, first_draw: int, losses: np.ndarray) -> None:
        """Write consecutive draws ``first_draw ..`` of one chain (not yet marked done)."""
        rows = np.asarray(losses, dtype=np.float32)
        self.group["losses"][chain, first_draw : first_draw + len(rows), :] = rows

    # Zarr writes chunk files without fsync: a power loss after ``mark_done`` could
    # leave a draw flagged done whose bytes never reached the disk. ``sync_draws`` is
    # called between writing draws and flagging them (jobs/commits.py); False only
    # for benchmarks measuring what it costs (bench/writer.py --durable 0,1).
    sync_writes: bool = True

    def sync_draws(self, chain: int, draws: list[int]) -> None:
        """fsync the ``losses`` chunk files holding ``draws`` of ``chain``, and the
        directories up to ``losses/`` (a new chunk's directory entry must last too)."""
        if not self.sync_writes or not draws:
            return
        c_chain, c_draw, _ = self.losses_array().chunks
        folders = {losses_chunk_folder(self.path, chain // c_chain, d // c_draw) for d in draws}
        parents: set[Path] = set()
        for folder in folders:
            for entry in os.scandir(folder):
                if entry.is_file():
                    fsync_path(Path(entry.path))
            fsync_path(folder)
            parents.update({folder.parent, folder.parent.parent, folder.parent.parent.parent})
        for parent in parents:
            fsync_path(parent)

    def mark_done(self, chain: int, draws: np.ndarray | list[int]) -> None:
        """Flag draws of one chain as durably written; call only after ``write_draw``."""
        done = self.group["done"]
        row = np.asarray(done[chain, :])
        row[np.asarray(draws, dtype=np.int64)] = True
        done[chain, :] = row

    def write_train_loss(self, chain: int, start_step: int, values: np.ndarray) -> None:
        if len(values):
            self.group["train_loss"][chain, start_step : start_step + len(values)] = values

    def write_draw_summaries(
        self, chain: int, first_draw: int, distance: np.ndarray, eval_mean: np.ndarray
    ) -> None:
        """||w - w*|| and the mean eval loss of consecutive draws ``first_draw ..`` of a chain.

        Stores made before these arrays existed are left as they are.
        """
        for name, values in (("distance", distance), ("eval_mean", eval_mean)):
            if len(values) and name in self.group:
                self.group[name][chain, first_draw : first_draw + len(values)] = np.asarray(
                    values, dtype=np.float32
                )

    def record_numerics(self, description: str) -> str:
        """Record how this run's draws are computed (``fingerprint.numerics_description``)
        unless a sampler already did; the recorded description (compare it with yours)."""
        with store_lock(self.path):
            fresh = zarr.open_group(str(self.path), mode="r+", zarr_format=3)
            stored = fresh.attrs.get("numerics")
            if stored is None:
                fresh.attrs["numerics"] = description
                stored = description
            self.group = fresh
            return str(stored)

    def mark_failed(self, chain: int, message: str) -> None:
        """Flag a chain failed and record why.

        Several processes may fail chains at once and this process's view of the
        group attributes may be old, so the message is added to a freshly read
        ``chain_errors`` under an flock (a file next to the store).
        """
        self.group["chain_status"][chain] = STATUS_FAILED
        with store_lock(self.path):
            fresh = zarr.open_group(str(self.path), mode="r+", zarr_format=3)
            errors = dict(fresh.attrs.get("chain_errors", {}))
            errors[str(chain)] = message
            fresh.attrs["chain_errors"] = errors
            self.group = fresh

    # ------------------------------------------------------------------ reading
    def read_whole(self, name: str) -> np.ndarray:
        """A whole (small) array; a chunk failing its checksum is a StoreError naming it."""
        try:
            return np.asarray(self.group[name][...])
        except ValueError as exc:
            if "checksum" not in str(exc):
                raise
            raise StoreError(
                f"store {str(self.path)!r}: a chunk of '{name}' fails its checksum (corrupted "
                "on disk): run 'losskernel verify RUN_DIR' to locate the damage"
            ) from exc

    def done(self) -> np.ndarray:
        return self.read_whole("done")

    def chain_status(self) -> np.ndarray:
        return self.read_whole("chain_status")

    def chain_errors(self) -> dict[str, str]:
        return dict(self.group.attrs.get("chain_errors", {}))

    def losses_array(self) -> zarr.Array:
        return self.group["losses"]

    def train_loss(self) -> np.ndarray:
        return self.read_whole("train_loss")

    def distances(self) -> np.ndarray | None:
        """(chains, draws) ||w - w*|| (NaN where not written), or None for an older store."""
        return self.read_whole("distance") if "distance" in self.group else None

    def eval_means(self) -> np.ndarray | None:
        """(chains, draws) mean eval loss per draw (NaN where not written), or None (older)."""
        return self.read_whole("eval_mean") if "eval_mean" in self.group else None

    def labels(self) -> np.ndarray | None:
        return np.asarray(self.group["labels"][...]) if "labels" in self.group else None

    def label_names(self) -> list[str] | None:
        return self.group.attrs.get("label_names")

    def attributes(self) -> dict[str, np.ndarray]:
        if "attributes" not in self.group:
            return {}
        sub = self.group["attributes"]
        return {name: np.asarray(arr[...]) for name, arr in sub.arrays()}

