"""The fast crc32c codec writes and reads exactly Zarr's standard crc32c format."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import Crc32cCodec

from losskernel_dist import store as _store  # noqa: F401  (registers the codec)
from losskernel_dist.checksum import THIS_CODEC, FastCrc32cCodec

crc32c = pytest.importorskip("crc32c")


def _roundtrip(path, write_codec, read_impl: str) -> np.ndarray:
    data = np.random.default_rng(0).standard_normal((64, 48))
    arr = zarr.create_array(path, shape=data.shape, chunks=(16, 16), dtype="float64",
                            compressors=[write_codec])
    arr[:] = data
    with zarr.config.set({"codecs.crc32c": read_impl}):
        back = zarr.open_array(path, mode="r")[:]
    np.testing.assert_array_equal(back, data)
    return data


def test_package_import_selects_the_fast_codec():
    assert zarr.config.get("codecs.crc32c") == THIS_CODEC


def test_same_on_disk_format_as_zarrs_codec(tmp_path):
    zarr_impl = "zarr.codecs.crc32c_.Crc32cCodec"
    # written by ours, read by zarr's; written by zarr's, read by ours
    _roundtrip(tmp_path / "fast.zarr", FastCrc32cCodec(), zarr_impl)
    _roundtrip(tmp_path / "zarr.zarr", Crc32cCodec(), THIS_CODEC)
    fast = sorted((tmp_path / "fast.zarr").rglob("c/*/*"))
    assert len(fast) == 12
    for chunk in fast:
        twin = tmp_path / "zarr.zarr" / chunk.relative_to(tmp_path / "fast.zarr")
        assert chunk.read_bytes() == twin.read_bytes()


def test_a_flipped_byte_is_a_named_checksum_error(tmp_path):
    _roundtrip(tmp_path / "a.zarr", FastCrc32cCodec(), THIS_CODEC)
    chunk = sorted((tmp_path / "a.zarr").rglob("c/*/*"))[0]
    raw = bytearray(chunk.read_bytes())
    raw[10] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch.*corrupted"):
        zarr.open_array(tmp_path / "a.zarr", mode="r")[:]
