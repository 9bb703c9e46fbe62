"""RunStore on its own: layout, writes, typed attributes, damage detection."""

from __future__ import annotations

import numpy as np
import pytest

from losskernel_dist.errors import StoreError
from losskernel_dist.store import STATUS_FAILED, STATUS_OK, RunStore


def _store(tmp_path, chains=2, draws=6, n=10, labels=True) -> RunStore:
    return RunStore.create(
        tmp_path / "s.zarr", chains=chains, draws=draws, n=n, total_steps=20,
        config={"sampler": {"chains": chains}}, labels=np.arange(n) % 3 if labels else None,
        label_names=["a", "b", "c"] if labels else None,
        attributes={"flag": np.arange(n) % 2}, extra_attrs={"fingerprints": {"model": "m"},
                                                            "n_train": 99},
    )


def test_created_store_is_empty_and_reopens(tmp_path):
    store = _store(tmp_path)
    assert store.shape == (2, 6, 10)
    assert not store.done().any() and (store.chain_status() == STATUS_OK).all()
    assert np.isnan(store.losses_array()[...]).all()
    again = RunStore.open(tmp_path / "s.zarr")
    assert again.config == {"sampler": {"chains": 2}}
    assert again.fingerprints == {"model": "m"} and again.n_train == 99
    assert again.reduce_record == {} and again.draws_used == 0
    assert again.labels().tolist() == (np.arange(10) % 3).tolist()
    assert again.label_names() == ["a", "b", "c"]
    assert again.attributes()["flag"].tolist() == (np.arange(10) % 2).tolist()


def test_create_refuses_an_existing_store_and_open_a_missing_one(tmp_path):
    _store(tmp_path)
    with pytest.raises(StoreError, match="already exists"):
        _store(tmp_path)
    with pytest.raises(StoreError, match="no store"):
        RunStore.open(tmp_path / "nothing.zarr")


def test_draws_are_written_then_marked_done_and_can_be_unmarked(tmp_path):
    store = _store(tmp_path)
    rows = np.arange(30, dtype=np.float32).reshape(3, 10)
    store.write_draws(1, 2, rows)
    assert not store.done().any()  # written is not done
    store.mark_done(1, [2, 3, 4])
    assert store.done()[1].tolist() == [False, False, True, True, True, False]
    assert np.array_equal(store.read_loss_columns(0, 10)[1, 2:5], rows)
    store.unmark_done(1, [3])
    assert store.done()[1].tolist() == [False, False, True, False, True, False]


def test_failed_chain_and_reduce_record(tmp_path):
    store = _store(tmp_path)
    store.mark_failed(0, "diverged at step 3")
    assert store.chain_status().tolist() == [STATUS_FAILED, STATUS_OK]
    assert RunStore.open(tmp_path / "s.zarr").chain_errors() == {"0": "diverged at step 3"}
    store.set_reduce_record({"draws_used": 12, "engine": "dask"})
    assert RunStore.open(tmp_path / "s.zarr").draws_used == 12


def test_numerics_are_recorded_once(tmp_path):
    store = _store(tmp_path)
    assert store.record_numerics("device=cpu threads=1") == "device=cpu threads=1"
    assert store.record_numerics("device=cpu threads=2") == "device=cpu threads=1"


def test_missing_and_corrupt_loss_chunks_are_located(tmp_path):
    store = _store(tmp_path)
    store.write_draws(0, 0, np.ones((6, 10), np.float32))
    store.write_draws(1, 0, np.ones((6, 10), np.float32))
    store.mark_done(0, range(6))
    store.mark_done(1, range(6))
    assert store.missing_loss_chunks(store.done()) == []
    path = store.loss_chunk_file(1, 0, 0)
    assert path.is_file()
    path.unlink()
    missing = store.missing_loss_chunks(store.done())
    assert {(d.chain, d.draw) for d in missing} == {(1, t) for t in range(6)}
    assert all(d.kind == "missing" and d.file == path for d in missing)
    target = store.loss_chunk_file(0, 0, 0)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    corrupt = store.corrupt_loss_chunks()
    assert {(d.chain, d.kind) for d in corrupt} == {(0, "corrupt")}
    with pytest.raises(StoreError, match="chain 0 .* fails its checksum"):
        store.read_loss_columns(0, 10)
