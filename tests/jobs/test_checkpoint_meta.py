"""The checkpoint sidecar: the step ``info`` shows without torch, trusted only while it
describes the checkpoint file on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from losskernel_dist.checkpoint import ChainState, restore, save_chain
from losskernel_dist.checkpoint_meta import (
    chain_path,
    has_checkpoint,
    sidecar_path,
    sidecar_step,
)


def _state(chain: int, step: int, value: float = 1.0) -> ChainState:
    return ChainState(chain, step, {"w": torch.full((3,), value)}, "key")


def test_save_writes_a_sidecar_with_the_step(tmp_path: Path) -> None:
    assert sidecar_step(tmp_path, 0) is None and not has_checkpoint(tmp_path, 0)
    save_chain(tmp_path, _state(0, 4))
    save_chain(tmp_path, _state(0, 8))
    assert sidecar_step(tmp_path, 0) == 8 and has_checkpoint(tmp_path, 0)
    record = json.loads(sidecar_path(tmp_path, 0).read_text())
    assert record["fingerprint"] == "key" and record["chain"] == 0
    assert sidecar_step(tmp_path, 1) is None


def test_sidecar_of_another_file_is_ignored(tmp_path: Path) -> None:
    """A checkpoint replaced without its sidecar (a kill between the two writes) or
    truncated later no longer matches: the caller must read the checkpoint itself."""
    save_chain(tmp_path, _state(0, 4))
    path = chain_path(tmp_path, 0)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert sidecar_step(tmp_path, 0) is None
    save_chain(tmp_path, _state(0, 8))
    with open(path, "r+b") as fh:
        fh.truncate(stat.st_size // 2)
    assert sidecar_step(tmp_path, 0) is None
    sidecar_path(tmp_path, 0).write_text("{not json")
    assert sidecar_step(tmp_path, 0) is None


def test_restore_keeps_the_sidecar_true(tmp_path: Path) -> None:
    """A promoted ``.prev`` gets its own sidecar; discarded checkpoints lose theirs."""
    save_chain(tmp_path, _state(0, 4))
    save_chain(tmp_path, _state(0, 8))
    state = restore(tmp_path, 0, lambda s: s.step == 4)
    assert state is not None and state.step == 4
    assert sidecar_step(tmp_path, 0) == 4
    sidecar_path(tmp_path, 0).unlink()  # a checkpoint written before sidecars
    assert restore(tmp_path, 0, lambda s: True).step == 4
    assert sidecar_step(tmp_path, 0) == 4
    assert restore(tmp_path, 0, lambda s: False) is None
    assert not sidecar_path(tmp_path, 0).exists() and not has_checkpoint(tmp_path, 0)
