"""fsync by path: what makes a rename or a new file survive a power loss.

A file's bytes need an fsync of the file; its name (a rename, a new entry)
needs an fsync of the directory holding it. Every durable write of the
package (atomic writes, checkpoints, draws before their done flags) uses this.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory (its entries) by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
