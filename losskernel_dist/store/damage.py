"""Damage to the ``losses`` array: chunks of done draws that are missing or corrupt.

Zarr reads a missing chunk as its fill value (NaN for losses): a deleted chunk
file would turn into NaN loss vectors without an error. Every reader of draws
therefore checks that the chunks of the draws marked done exist
(``missing_loss_chunks``) and reads through ``read_loss_columns``, which turns a
checksum mismatch into a StoreError naming the chain, draws and file.
``losskernel verify`` lists both kinds and, with ``--repair``, clears the
``done`` flags of the draws they held (``unmark_done``), as a resume does for
missing chunks, so that sampling redoes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from ..errors import StoreError
from .layout import losses_chunk_folder


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


class LossDamage:
    """``RunStore``'s checks of the ``losses`` chunks (a mixin over its group and path)."""

    group: zarr.Group
    path: Path

    def loss_chunk_file(self, chain: int, draw: int, column_chunk: int) -> Path:
        """The file of the ``losses`` chunk holding (chain, draw, column block)."""
        c_chain, c_draw, _ = self.group["losses"].chunks
        return losses_chunk_folder(self.path, chain // c_chain, draw // c_draw) / str(column_chunk)

    def missing_loss_chunks(self, mask: np.ndarray) -> list[DamagedChunk]:
        """The ``losses`` chunks that hold a draw of ``mask`` (chains, draws) but are absent."""
        arr = self.group["losses"]
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
                folder = losses_chunk_folder(self.path, chain_chunk, draw_chunk)
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
        arr = self.group["losses"]
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
        arr = self.group["losses"]
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
