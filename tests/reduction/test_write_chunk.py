"""The reduce's own chunk encoder (reduction/tiles.py write_chunk) stores Zarr's bytes.

The kernel arrays' tiles are encoded by the reduce itself (raw little-endian values
and their crc32c) instead of by Zarr's pipeline, which copied each tile three times.
Every chunk file it writes must be byte for byte the one Zarr writes for the same
values, edge chunks (padded with the fill value) included, and Zarr must read it
back (its checksum verified); anything it does not encode itself goes to Zarr.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from losskernel_dist.reduction.tiles import write_chunk
from losskernel_dist.store import array_codecs


def _files(root) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("c/**/*"))
            if f.is_file()}


def _pair(tmp_path, dtype: str, compress: bool = False):
    make = lambda name: zarr.create_array(  # noqa: E731
        tmp_path / name, shape=(10, 7), chunks=(4, 4), dtype=dtype,
        config={"write_empty_chunks": True}, **array_codecs(compress=compress))
    return make("ours.zarr"), make("zarr.zarr")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_chunk_file_is_the_one_zarr_writes(tmp_path, dtype):
    ours, theirs = _pair(tmp_path, dtype)
    values = np.random.default_rng(0).normal(size=(10, 7)).astype(dtype)
    for r0 in range(0, 10, 4):
        for c0 in range(0, 7, 4):
            tile = values[r0:r0 + 4, c0:c0 + 4]  # 2 x 3 and 4 x 3 tiles at the edges
            write_chunk(ours, (r0, c0), tile if c0 else tile.T.copy().T)  # a non-C-order one
            theirs[r0:r0 + 4, c0:c0 + 4] = tile
    assert _files(tmp_path / "ours.zarr") == _files(tmp_path / "zarr.zarr")
    assert len(_files(tmp_path / "ours.zarr")) == 6
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "ours.zarr")[...], values)


def test_a_corrupted_chunk_is_still_caught_by_zarrs_checksum(tmp_path):
    ours, _ = _pair(tmp_path, "float32")
    write_chunk(ours, (0, 0), np.ones((4, 4), np.float32))
    (chunk,) = (f for f in (tmp_path / "ours.zarr").rglob("c/**/*") if f.is_file())
    data = bytearray(chunk.read_bytes())
    data[5] ^= 1
    chunk.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        zarr.open_array(tmp_path / "ours.zarr")[...]


def test_what_it_does_not_encode_goes_to_zarr(tmp_path):
    """Compressed arrays, a block not at a chunk corner, or one short of its chunk."""
    ours, theirs = _pair(tmp_path, "float32", compress=True)
    tile = np.arange(16, dtype=np.float32).reshape(4, 4)
    write_chunk(ours, (4, 0), tile)
    theirs[4:8, 0:4] = tile
    assert _files(tmp_path / "ours.zarr") == _files(tmp_path / "zarr.zarr")
    plain, _ = _pair(tmp_path / "plain", "float32")
    plain[...] = 7.0
    write_chunk(plain, (1, 1), tile[:2, :2])  # inside chunk (0, 0): the rest of it is kept
    write_chunk(plain, (4, 4), tile[:2, :2])  # short of chunk (1, 1)'s 4 x 3
    expect = np.full((10, 7), 7.0, np.float32)
    expect[1:3, 1:3] = expect[4:6, 4:6] = tile[:2, :2]
    np.testing.assert_array_equal(plain[...], expect)


def test_an_in_memory_array_is_assigned_in_place():
    """bench/reduce_cluster.py times a tile written into NumPy arrays (no store)."""
    out = np.zeros((6, 6), np.float32)
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_chunk(out, (2, 3), values)
    assert np.array_equal(out[2:4, 3:6], values) and out.sum() == values.sum()
