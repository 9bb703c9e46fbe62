"""The Zarr v3 layout of a run's ``store.zarr``: its arrays, codecs, chunking and lock file.

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
    analysis/neighbours/*, analysis/embedding/*   the analysis' outputs

Every array is created, full size, when the run starts: nothing is appended.
A chunk of ``losses`` holds a few draws of one chain over a block of samples,
so a rank writes only its own chains' chunks and the reduction reads column
blocks. Zarr's local store replaces a chunk file atomically; each chunk also
carries a crc32c checksum so a corrupted chunk is an error, never a wrong
kernel.

The package ``store`` is the only code that knows these paths. This module
holds what every part of it shares: the constants, the codecs, the chunk
shape and file of ``losses``, and the lock file next to the store. The groups
each have their own module (``run``: creation and the sampling arrays,
``damage``, ``reference``, ``kernel``, ``neighbours``, ``analysis``).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zarr.codecs import Crc32cCodec, ZstdCodec

STATUS_OK = 0
STATUS_FAILED = 1

SAMPLE_CHUNK = 4096  # samples per chunk along N
CHUNK_BYTES = 256 * 1024  # target size of one losses chunk


def array_codecs(compress: bool = True) -> dict[str, Any]:
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


def losses_chunk_folder(store_path: Path, chain_chunk: int, draw_chunk: int) -> Path:
    """The folder of the ``losses`` chunks of one (chain chunk, draw chunk): one file per
    column block, named by its index (Zarr v3's default chunk key encoding)."""
    return store_path / "losses" / "c" / str(chain_chunk) / str(draw_chunk)


@contextmanager
def store_lock(store_path: Path) -> Iterator[None]:
    """Hold the flock of the file next to the store (``store.zarr.lock``).

    Processes of one run (ranks, array tasks) take it for every read-modify-write of
    the group attributes and for writing the reference, which they may race to.
    """
    fd = os.open(store_path.with_name(store_path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
