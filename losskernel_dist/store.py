"""The Zarr v3 store of a run: the only module that knows its paths and chunking.

Layout (docs/interface.md):

    losses        float32 (chain, draw, sample)   loss vector of every kept draw
    done          bool    (chain, draw)           true once that draw is durably written
    train_loss    float32 (chain, step)           mean minibatch loss at every SGLD step
    distance      float32 (chain, draw)           ||w - w*|| at every kept draw
    eval_mean     float32 (chain, draw)           mean eval loss of every kept draw
    reference/eval_losses float32 (sample,)       eval loss vector at w*; the group's attrs
                                                  hold the mean train loss at w* (guards/)
    chain_status  int8    (chain,)                0 ok, 1 failed (see attrs["chain_errors"])
    labels        int64   (sample,)               eval labels, when the task has them
    attributes/*          (sample,)               per-sample attributes of the task
    kernel/mean, kernel/var (sample,), kernel/cov, kernel/corr (sample_i, sample_j)
    neighbours/*                                  streamed top-k lists (reduction/topk.py)

Every array is created, full size, when the run starts: nothing is appended.
A chunk of ``losses`` holds a few draws of one chain over a block of samples,
so a rank writes only its own chains' chunks and the reduction reads column
blocks. Zarr's local store replaces a chunk file atomically; each chunk also
carries a crc32c checksum so a corrupted chunk is an error, never a wrong
kernel.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from .errors import StoreError

STATUS_OK = 0
STATUS_FAILED = 1

SAMPLE_CHUNK = 4096  # samples per chunk along N
CHUNK_BYTES = 256 * 1024  # target size of one losses chunk



def _codecs(compress: bool = True) -> dict[str, Any]:
    """Zstd (cheap, and loss vectors near a minimum compress well) and a crc32c checksum.

    The N x N kernel tiles are near-random floats that zstd barely shrinks, so they
    get only the checksum: writing them is then bound by the disk, not the codec.
    """
    if not compress:
        return {"compressors": [Crc32cCodec()]}
    return {"compressors": [ZstdCodec(level=1), Crc32cCodec()]}


def losses_chunks(chains: int, draws: int, n: int) -> tuple[int, int, int]:
    """Chunk shape of ``losses``: one chain, a few draws, a block of samples."""
    n_chunk = min(n, SAMPLE_CHUNK)
    t_chunk = int(max(1, min(draws, CHUNK_BYTES // (4 * n_chunk))))
    return (1, t_chunk, n_chunk)


@dataclass(frozen=True)
class DamagedChunk:
    """A draw whose ``losses`` chunk is missing or corrupt, and the chunk's file."""

    chain: int
    draw: int
    file: Path
    kind: str  # "missing" or "corrupt"

    def describe(self) -> str:
        return f"the losses chunk {self.file} of chain {self.chain} (draw {self.draw})"


def describe_damage(damaged: list[DamagedChunk]) -> str:
    """One line: how many draws of which chains, and the first file."""
    chains = sorted({d.chain for d in damaged})
    first = damaged[0]
    return (f"{len(damaged)} done draws of chains {chains} have a {first.kind} losses chunk "
            f"(first: {first.file}, chain {first.chain}, draw {first.draw})")


class RunStore:
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
        codecs = _codecs()
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

    def _attrs_lock(self) -> int:
        """An flock'ed file next to the store, for read-modify-write of the group attrs."""
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def record_numerics(self, description: str) -> str:
        """Record how this run's draws are computed (``fingerprint.numerics_description``)
        unless a sampler already did; the recorded description (compare it with yours)."""
        fd = self._attrs_lock()
        try:
            fresh = zarr.open_group(str(self.path), mode="r+", zarr_format=3)
            stored = fresh.attrs.get("numerics")
            if stored is None:
                fresh.attrs["numerics"] = description
                stored = description
            self.group = fresh
            return str(stored)
        finally:
            os.close(fd)

    def mark_failed(self, chain: int, message: str) -> None:
        """Flag a chain failed and record why.

        Several processes may fail chains at once and this process's view of the
        group attributes may be old, so the message is added to a freshly read
        ``chain_errors`` under an flock (a file next to the store).
        """
        self.group["chain_status"][chain] = STATUS_FAILED
        fd = self._attrs_lock()
        try:
            fresh = zarr.open_group(str(self.path), mode="r+", zarr_format=3)
            errors = dict(fresh.attrs.get("chain_errors", {}))
            errors[str(chain)] = message
            fresh.attrs["chain_errors"] = errors
            self.group = fresh
        finally:
            os.close(fd)

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

    # ------------------------------------------------------------------ damage
    # Zarr reads a missing chunk as its fill value (NaN for losses): a deleted chunk
    # file would turn into NaN loss vectors without an error. Every reader of draws
    # therefore checks that the chunks of the draws marked done exist
    # (``missing_loss_chunks``) and reads through ``read_loss_columns``, which turns a
    # checksum mismatch into a StoreError naming the chain, draws and file.
    def loss_chunk_file(self, chain: int, draw: int, column_chunk: int) -> Path:
        """The file of the ``losses`` chunk holding (chain, draw, column block)."""
        c_chain, c_draw, _ = self.losses_array().chunks
        return (self.path / "losses" / "c" / str(chain // c_chain) / str(draw // c_draw)
                / str(column_chunk))

    def missing_loss_chunks(self, mask: np.ndarray) -> list[DamagedChunk]:
        """The ``losses`` chunks that hold a draw of ``mask`` (chains, draws) but are absent."""
        arr = self.losses_array()
        c_chain, c_draw, c_n = arr.chunks
        chains, draws, n = arr.shape
        columns = [str(j) for j in range(-(-n // c_n))]
        out: list[DamagedChunk] = []
        for chain_chunk in range(-(-chains // c_chain)):
            for draw_chunk in range(-(-draws // c_draw)):
                rows = mask[chain_chunk * c_chain:(chain_chunk + 1) * c_chain,
                            draw_chunk * c_draw:(draw_chunk + 1) * c_draw]
                if not rows.any():
                    continue
                folder = self.path / "losses" / "c" / str(chain_chunk) / str(draw_chunk)
                present = set(os.listdir(folder)) if folder.is_dir() else set()
                for column in columns:
                    if column in present:
                        continue
                    for i, t in zip(*np.nonzero(rows), strict=True):
                        out.append(DamagedChunk(int(chain_chunk * c_chain + i),
                                                int(draw_chunk * c_draw + t),
                                                folder / column, "missing"))
        return out

    def read_loss_columns(self, j0: int, j1: int) -> np.ndarray:
        """``losses[:, :, j0:j1]``; a chunk that fails its checksum is a StoreError naming it."""
        arr = self.losses_array()
        try:
            return np.asarray(arr[:, :, j0:j1])
        except ValueError as exc:
            if "checksum" not in str(exc):
                raise
            bad = self.corrupt_loss_chunks(j0, j1)
            where = bad[0].describe() if bad else f"columns {j0}-{j1 - 1}"
            raise StoreError(
                f"store {str(self.path)!r}: {where} fails its checksum (corrupted on disk): "
                "run 'losskernel verify RUN_DIR --repair' and then 'losskernel sample' to "
                "recompute the draws"
            ) from exc

    def corrupt_loss_chunks(self, j0: int = 0, j1: int | None = None) -> list[DamagedChunk]:
        """Read every ``losses`` chunk over columns j0..j1 one by one; those whose checksum
        (or decompression) fails, one entry per draw they hold."""
        arr = self.losses_array()
        c_chain, c_draw, c_n = arr.chunks
        chains, draws, n = arr.shape
        j1 = n if j1 is None else j1
        out: list[DamagedChunk] = []
        for c in range(0, chains, c_chain):
            for t in range(0, draws, c_draw):
                for j in range((j0 // c_n) * c_n, j1, c_n):
                    try:
                        arr[c:c + c_chain, t:t + c_draw, j:j + c_n]
                    except Exception:  # noqa: BLE001 - any decode failure is damage
                        for chain in range(c, min(c + c_chain, chains)):
                            for draw in range(t, min(t + c_draw, draws)):
                                out.append(DamagedChunk(chain, draw,
                                                        self.loss_chunk_file(chain, draw, j // c_n),
                                                        "corrupt"))
        return out

    def unmark_done(self, chain: int, draws: np.ndarray | list[int]) -> None:
        """Clear the ``done`` flags of draws whose data were lost, so sampling redoes them."""
        done = self.group["done"]
        row = np.asarray(done[chain, :])
        row[np.asarray(draws, dtype=np.int64)] = False
        done[chain, :] = row

    def train_loss(self) -> np.ndarray:
        return self.read_whole("train_loss")

    def distances(self) -> np.ndarray | None:
        """(chains, draws) ||w - w*|| (NaN where not written), or None for an older store."""
        return self.read_whole("distance") if "distance" in self.group else None

    def eval_means(self) -> np.ndarray | None:
        """(chains, draws) mean eval loss per draw (NaN where not written), or None (older)."""
        return self.read_whole("eval_mean") if "eval_mean" in self.group else None

    # ------------------------------------------------------------------ reference at w*
    # The losses at the trained weights, measured once before sampling, against which
    # the guard rails judge how far the chains have drifted:
    #
    #   reference/eval_losses  float32 (sample,)   the eval loss vector at w*
    #   reference attrs        train_loss (mean train loss at w*), train_samples,
    #                          train_source (which samples), eval_loss_mean

    def _fresh_group(self) -> zarr.Group:
        return zarr.open_group(str(self.path), mode="r", zarr_format=3)

    def has_reference(self) -> bool:
        """True once the reference is completely written (by this or another process)."""
        group = self._fresh_group()
        return "reference" in group and "train_loss" in group["reference"].attrs

    def write_reference(self, eval_losses: np.ndarray, attrs: Mapping[str, Any]) -> bool:
        """Write the reference once; False when another process already had.

        Processes of one run may race to it (ranks, array tasks), so the check and
        the write happen under the store's flock; the attrs, written last, mark it
        complete.
        """
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            group = zarr.open_group(str(self.path), mode="r+", zarr_format=3)
            if "reference" in group and "train_loss" in group["reference"].attrs:
                return False
            if "reference" in group:
                del group["reference"]  # a write cut short by a kill
            sub = group.create_group("reference")
            values = np.asarray(eval_losses, dtype=np.float32)
            arr = sub.create_array(
                "eval_losses", shape=values.shape, chunks=(min(len(values), 1 << 20),),
                dtype="float32", dimension_names=("sample",), **_codecs(),
            )
            arr[:] = values
            sub.attrs.update(dict(attrs))
            return True
        finally:
            os.close(fd)

    def reference(self) -> dict[str, Any] | None:
        """The reference attrs plus ``eval_losses``, or None when it was never measured."""
        group = self._fresh_group()
        if "reference" not in group or "train_loss" not in group["reference"].attrs:
            return None
        sub = group["reference"]
        return {**dict(sub.attrs), "eval_losses": np.asarray(sub["eval_losses"][...])}

    def labels(self) -> np.ndarray | None:
        return np.asarray(self.group["labels"][...]) if "labels" in self.group else None

    def label_names(self) -> list[str] | None:
        return self.group.attrs.get("label_names")

    def attributes(self) -> dict[str, np.ndarray]:
        if "attributes" not in self.group:
            return {}
        sub = self.group["attributes"]
        return {name: np.asarray(arr[...]) for name, arr in sub.arrays()}

    def has_kernel(self) -> bool:
        return "kernel" in self.group and "corr" in self.group["kernel"]

    def has_kernel_array(self, name: str) -> bool:
        return "kernel" in self.group and name in self.group["kernel"]

    def kernel_array(self, name: str) -> zarr.Array:
        if "kernel" not in self.group or name not in self.group["kernel"]:
            raise StoreError(f"store {str(self.path)!r} has no kernel/{name}: run 'losskernel reduce'")
        return self.group["kernel"][name]

    # ------------------------------------------------------------------ reduce outputs
    def create_kernel(
        self, n: int, block: int, dtype: str, dense: bool = True
    ) -> dict[str, zarr.Array]:
        """(Re)create the kernel arrays, chunked in ``block`` x ``block`` tiles.

        ``dense=False`` (a neighbours-only reduce) creates only ``mean`` and ``var``:
        the group always describes the latest reduce, so an older dense kernel,
        which may rest on other draws, is removed with it.
        """
        if "kernel" in self.group:
            del self.group["kernel"]
        sub = self.group.create_group("kernel")
        codecs = _codecs()
        out = {}
        for name in ("mean", "var"):
            out[name] = sub.create_array(
                name, shape=(n,), chunks=(min(n, 1 << 20),), dtype="float64",
                dimension_names=("sample",), **codecs,
            )
        for name in ("cov", "corr") if dense else ():
            out[name] = sub.create_array(
                name, shape=(n, n), chunks=(min(n, block), min(n, block)), dtype=dtype,
                dimension_names=("sample_i", "sample_j"), **_codecs(compress=False),
                # every tile is written once, whole: skip zarr's all-equal-to-fill scan
                config={"write_empty_chunks": True},
            )
        return out

    # ------------------------------------------------------------------ streamed neighbours
    # Written by the neighbours reduce (reduction/topk.py) one row block at a time, for runs
    # whose N x N kernel is too large to store:
    #
    #   neighbours/top_index     int64   (sample, k)          -1 where fewer candidates exist
    #   neighbours/top_value     float64 (sample, k)          NaN there
    #   neighbours/bottom_index  int64   (sample, k_bottom)   (k_bottom may be 0)
    #   neighbours/bottom_value  float64 (sample, k_bottom)
    #   neighbours/done          bool    (row_block,)         true once the block's rows are written
    #
    # Rows of one block are one chunk, and ``done`` has one chunk per block, so threads
    # writing different blocks never share a chunk and an interrupted reduce leaves only
    # whole blocks marked done. attrs: metric, k, k_bottom, exclude_same_label,
    # block_size, draws_used, chains_used and ``key`` (a digest of all of them and of the
    # draws used): a rerun with the same key resumes, any other recreates the group.

    NEIGHBOUR_ARRAYS = ("top_index", "top_value", "bottom_index", "bottom_value")

    def open_stream_neighbours(
        self, n: int, k: int, k_bottom: int, block: int, attrs: Mapping[str, Any]
    ) -> tuple[dict[str, zarr.Array], np.ndarray]:
        """The ``neighbours`` arrays for a reduce with ``attrs``, and which blocks are done.

        An existing group whose ``key`` equals ``attrs["key"]`` is kept (resume);
        anything else is replaced by a fresh group with no block done.
        """
        blocks = -(-n // block)
        if "neighbours" in self.group:
            old = self.group["neighbours"]
            if old.attrs.get("key") == attrs["key"] and "done" in old:
                arrays = {name: old[name] for name in (*self.NEIGHBOUR_ARRAYS, "done")}
                return arrays, np.asarray(arrays["done"][...])
            del self.group["neighbours"]
        sub = self.group.create_group("neighbours")
        codecs = _codecs()
        arrays = {}
        for name in self.NEIGHBOUR_ARRAYS:
            width = k if name.startswith("top") else k_bottom
            index = name.endswith("index")
            arrays[name] = sub.create_array(
                name, shape=(n, width), chunks=(min(n, block), max(width, 1)),
                dtype="int64" if index else "float64", fill_value=-1 if index else np.nan,
                dimension_names=("sample", "rank"), **codecs,
            )
        arrays["done"] = sub.create_array(
            "done", shape=(blocks,), chunks=(1,), dtype="bool", fill_value=False,
            dimension_names=("row_block",), **codecs,
        )
        sub.attrs.update({**dict(attrs), "complete": False})
        return arrays, np.zeros(blocks, dtype=bool)

    def finish_stream_neighbours(self, extra: Mapping[str, Any]) -> None:
        """Mark the streamed neighbours complete (every block done) and add ``extra`` attrs."""
        self.group["neighbours"].attrs.update({**dict(extra), "complete": True})

    def has_stream_neighbours(self) -> bool:
        """True when a neighbours reduce finished (every row block written)."""
        return "neighbours" in self.group and bool(
            self.group["neighbours"].attrs.get("complete", False))

    def read_stream_neighbours(self) -> dict[str, Any]:
        """The streamed neighbour arrays by name, plus ``attrs``; refuses an unfinished one."""
        if not self.has_stream_neighbours():
            raise StoreError(
                f"store {str(self.path)!r} has no complete neighbours: run 'losskernel reduce' "
                "with reduce.kernel neighbours or both (an interrupted one resumes)"
            )
        sub = self.group["neighbours"]
        out: dict[str, Any] = {name: np.asarray(sub[name][...]) for name in self.NEIGHBOUR_ARRAYS}
        out["attrs"] = dict(sub.attrs)
        return out

    # ------------------------------------------------------------------ analysis outputs
    # Written by losskernel_dist.analysis; kept under the group "analysis" so that a
    # new analysis replaces them without touching draws or kernel.
    #
    #   analysis/neighbours/top_index     int64   (sample, k_top)     -1 where fewer exist
    #   analysis/neighbours/top_corr      float64 (sample, k_top)     NaN where fewer exist
    #   analysis/neighbours/bottom_index  int64   (sample, k_bottom)
    #   analysis/neighbours/bottom_corr   float64 (sample, k_bottom)
    #   analysis/embedding/<name>         float32 (sample, dim)       e.g. umap_2d, umap_3d

    def _analysis_group(self) -> zarr.Group:
        if "analysis" not in self.group:
            return self.group.create_group("analysis")
        return self.group["analysis"]

    def write_neighbours(
        self,
        top_index: np.ndarray,
        top_corr: np.ndarray,
        bottom_index: np.ndarray,
        bottom_corr: np.ndarray,
        attrs: Mapping[str, Any],
    ) -> None:
        """(Re)write the top-k / bottom-k neighbour lists and what they were computed with."""
        parent = self._analysis_group()
        if "neighbours" in parent:
            del parent["neighbours"]
        sub = parent.create_group("neighbours")
        codecs = _codecs()
        arrays = {
            "top_index": np.asarray(top_index, dtype=np.int64),
            "top_corr": np.asarray(top_corr, dtype=np.float64),
            "bottom_index": np.asarray(bottom_index, dtype=np.int64),
            "bottom_corr": np.asarray(bottom_corr, dtype=np.float64),
        }
        for name, values in arrays.items():
            arr = sub.create_array(
                name, shape=values.shape, chunks=(min(max(values.shape[0], 1), 1 << 16),
                                                  max(values.shape[1], 1)),
                dtype=values.dtype, dimension_names=("sample", "rank"), **codecs,
            )
            arr[...] = values
        sub.attrs.update(dict(attrs))

    def has_neighbours(self) -> bool:
        return "analysis" in self.group and "neighbours" in self.group["analysis"]

    def read_neighbours(self) -> dict[str, Any]:
        """The neighbour arrays by name, plus ``attrs`` (k, exclusion, draws)."""
        if not self.has_neighbours():
            raise StoreError(f"store {str(self.path)!r} has no analysis/neighbours: run 'losskernel analyze'")
        sub = self.group["analysis"]["neighbours"]
        out: dict[str, Any] = {name: np.asarray(arr[...]) for name, arr in sub.arrays()}
        out["attrs"] = dict(sub.attrs)
        return out

    def write_embedding(self, name: str, coords: np.ndarray, attrs: Mapping[str, Any]) -> None:
        """(Re)write one per-sample embedding (e.g. ``umap_2d``) with its settings."""
        parent = self._analysis_group()
        sub = parent["embedding"] if "embedding" in parent else parent.create_group("embedding")
        if name in sub:
            del sub[name]
        values = np.asarray(coords, dtype=np.float32)
        arr = sub.create_array(
            name, shape=values.shape, chunks=values.shape, dtype=values.dtype,
            dimension_names=("sample", "component"), **_codecs(),
        )
        arr[...] = values
        arr.attrs.update(dict(attrs))

    def read_embedding(self, name: str) -> np.ndarray | None:
        """A stored embedding, or None when there is none of that name."""
        if "analysis" not in self.group or "embedding" not in self.group["analysis"]:
            return None
        sub = self.group["analysis"]["embedding"]
        return np.asarray(sub[name][...]) if name in sub else None
