"""The store's crc32c checksum codec, computed by the fastest CRC-32C library at hand.

Every chunk of the store carries a CRC-32C (Zarr v3's standard ``crc32c``
codec), so that a corrupted file is detected instead of read as numbers. Zarr
computes it with ``google_crc32c``, which on some builds runs its portable
software loop (measured here: ~260 MB/s, slower than the disk; see
docs/performance.md). The ``crc32c`` package computes the same checksum with the
CPU's CRC32 instruction (~4 GB/s here). This codec is Zarr's own, on-disk format
included (its name, the 4 little-endian bytes appended to the chunk); only the
function that computes the checksum differs, so stores written with it open
anywhere and stores written elsewhere open here.

``register()`` makes Zarr use it for every array it opens or creates while
this package is imported; nothing changes when the ``crc32c`` package is
missing, or when the user has configured another implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer

try:
    from crc32c import crc32c as _crc32c
except ImportError:  # pragma: no cover - the fallback is zarr's own codec
    _crc32c = None

ZARR_DEFAULT = "zarr.codecs.crc32c_.Crc32cCodec"
THIS_CODEC = f"{__name__}.FastCrc32cCodec"


class ChecksumMismatch(ValueError):
    """A chunk's stored CRC-32C differs from the one computed from its bytes."""


@dataclass(frozen=True)
class FastCrc32cCodec(Crc32cCodec):
    """Zarr's ``crc32c`` codec with the checksum from the ``crc32c`` package when present."""

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer:
        if _crc32c is None:
            return super()._decode_sync(chunk_bytes, chunk_spec)
        data = chunk_bytes.as_numpy_array()
        inner = data[:-4]
        stored = bytes(data[-4:])
        computed = np.uint32(_crc32c(inner)).tobytes()
        if computed != stored:
            raise ChecksumMismatch(
                f"chunk checksum mismatch (stored {stored.hex()}, computed {computed.hex()}): "
                "the chunk file is corrupted"
            )
        return chunk_spec.prototype.buffer.from_array_like(inner)

    def _encode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer | None:
        if _crc32c is None:
            return super()._encode_sync(chunk_bytes, chunk_spec)
        data = chunk_bytes.as_numpy_array()
        out = np.empty(data.size + 4, dtype=np.uint8)
        out[:-4] = data.reshape(-1).view(np.uint8)
        out[-4:] = np.array([_crc32c(data)], dtype="<u4").view(np.uint8)
        return chunk_spec.prototype.buffer.from_array_like(out)


def register() -> bool:
    """Use FastCrc32cCodec for ``crc32c`` chunks; False when it is not available or not wanted."""
    if _crc32c is None:
        return False
    current = zarr.config.get("codecs.crc32c", ZARR_DEFAULT)
    if current not in (ZARR_DEFAULT, THIS_CODEC):
        return False  # the user chose an implementation: keep it
    zarr.registry.register_codec("crc32c", FastCrc32cCodec)
    zarr.config.set({"codecs.crc32c": THIS_CODEC})
    return True
