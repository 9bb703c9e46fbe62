"""Chain checkpoints on their own: atomic save with .prev, checksum, fallback, restore."""

from __future__ import annotations

import warnings

import pytest
import torch

from losskernel_dist.checkpoint import (
    ChainState,
    DamagedCheckpoint,
    chain_path,
    load_chain,
    read_checkpoint,
    restore,
    save_chain,
)


def _state(step: int, chain: int = 0) -> ChainState:
    return ChainState(chain, step, {"w": torch.full((3, 2), float(step)),
                                    "b": torch.tensor(float(step))}, "key")


def _flip_param_bit(path) -> None:
    raw = torch.full((3, 2), 8.0).reshape(-1).view(torch.uint8).numpy().tobytes()
    data = bytearray(path.read_bytes())
    at = bytes(data).find(raw)
    assert at >= 0
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_save_keeps_the_previous_state(tmp_path):
    save_chain(tmp_path, _state(4))
    save_chain(tmp_path, _state(8))
    assert read_checkpoint(chain_path(tmp_path, 0)).step == 8
    assert read_checkpoint(chain_path(tmp_path, 0).with_suffix(".prev")).step == 4
    assert not list(tmp_path.glob("*.tmp*"))
    state = load_chain(tmp_path, 0)
    assert torch.equal(state.params["w"], torch.full((3, 2), 8.0))


def test_a_flipped_bit_fails_the_checksum_and_falls_back(tmp_path):
    save_chain(tmp_path, _state(4))
    save_chain(tmp_path, _state(8))
    _flip_param_bit(chain_path(tmp_path, 0))
    with pytest.raises(DamagedCheckpoint, match="checksum"):
        read_checkpoint(chain_path(tmp_path, 0))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert load_chain(tmp_path, 0).step == 4


def test_restore_takes_the_newest_accepted_state_and_drops_newer_ones(tmp_path):
    save_chain(tmp_path, _state(4))
    save_chain(tmp_path, _state(8))
    chosen = restore(tmp_path, 0, lambda s: s.step <= 4)
    assert chosen.step == 4
    assert read_checkpoint(chain_path(tmp_path, 0)).step == 4  # .prev became current
    assert not chain_path(tmp_path, 0).with_suffix(".prev").exists()
    assert restore(tmp_path, 0, lambda s: False) is None
    assert not chain_path(tmp_path, 0).exists()


def test_a_truncated_file_is_skipped(tmp_path):
    save_chain(tmp_path, _state(4))
    save_chain(tmp_path, _state(8))
    path = chain_path(tmp_path, 0)
    path.write_bytes(path.read_bytes()[:50])
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert load_chain(tmp_path, 0).step == 4
