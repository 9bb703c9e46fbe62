"""Damaged stores and checkpoints: detected, named in one line, and repaired bitwise.

A deleted or corrupted ``losses`` chunk must never become a kernel of NaNs with
exit 0: readers refuse it naming chain, draw and file; ``losskernel verify``
finds it; ``losskernel sample`` (after ``verify --repair`` for corrupt chunks)
recomputes exactly the lost draws, bit for bit. A flipped bit inside a chain
checkpoint fails its checksum and the chain resumes from an older state.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from losskernel_dist.checkpoint import chain_path, read_checkpoint
from losskernel_dist.cli import main as cli_main
from losskernel_dist.config import config_from_dict
from losskernel_dist.errors import StoreError
from losskernel_dist.jobs.sample import sample
from losskernel_dist.reduction.kernel import reduce_store
from losskernel_dist.rundir import RunDir

from ..dist_helpers import (
    REPO,
    assert_same_arrays,
    run_config,
    store_arrays,
    subprocess_env,
    write_yaml,
)

CHAINS = 2


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, np.ndarray]:
    run = tmp_path_factory.mktemp("reference") / "run"
    sample(config_from_dict(run_config(run, chains=CHAINS, write_queue=0)), progress=False)
    return store_arrays(run)


def _sampled(tmp_path: Path) -> tuple[Path, Path]:
    run = tmp_path / "run"
    cfg = write_yaml(tmp_path / "config.yaml", run_config(run, chains=CHAINS, write_queue=0))
    assert cli_main(["sample", str(cfg), "--no-progress"]) == 0
    return run, cfg


def _loss_chunks(run: Path, chain: int) -> list[Path]:
    return sorted(p for p in (RunDir(run).store / "losses" / "c" / str(chain)).rglob("*")
                  if p.is_file())


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_deleted_chunk_is_refused_then_recomputed_bitwise(tmp_path, reference, capsys):
    run, cfg = _sampled(tmp_path)
    lost = _loss_chunks(run, 1)[0]
    lost.unlink()
    capsys.readouterr()
    # reduce: exit 2, one line naming the chain and the file; no kernel of NaNs written
    assert cli_main(["reduce", str(run), "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert "missing" in line and "chains [1]" in line and str(lost) in line, line
    assert not RunDir(run).open_store().has_kernel()
    with pytest.raises(StoreError, match="missing losses chunk"):
        reduce_store(RunDir(run).open_store(mode="r+"), block_size=8, threads=1)
    # verify finds it (exit 2, one line)
    assert cli_main(["verify", str(run)]) == 2
    assert "chains [1]" in _one_error_line(capsys)
    # sample recomputes the lost draws: the store equals the uninterrupted run's
    assert cli_main(["sample", str(cfg), "--no-progress"]) == 0
    assert "recomputing" in capsys.readouterr().err
    assert_same_arrays(store_arrays(run), reference)
    assert cli_main(["verify", str(run)]) == 0
    assert cli_main(["reduce", str(run), "--no-progress"]) == 0
    assert np.isfinite(RunDir(run).open_store().kernel_array("corr")[...]).all()


def test_corrupt_chunk_is_located_repaired_and_recomputed(tmp_path, reference, capsys):
    run, cfg = _sampled(tmp_path)
    bad = _loss_chunks(run, 0)[-1]
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x10
    bad.write_bytes(bytes(data))
    capsys.readouterr()
    assert cli_main(["verify", str(run)]) == 2
    line = _one_error_line(capsys)
    assert "chains [0]" in line and str(bad) in line, line
    assert cli_main(["verify", str(run), "--repair"]) == 0
    assert not bad.exists()
    assert not RunDir(run).open_store().done()[0].all()
    assert cli_main(["sample", str(cfg), "--no-progress"]) == 0
    assert_same_arrays(store_arrays(run), reference)


def test_flipped_bit_in_a_checkpoint_is_caught_and_the_chain_redone(tmp_path, reference,
                                                                     capsys):
    """Killed just after chain 0's third commit (a checkpoint and its done flags): that
    checkpoint would be resumed from. A bit flipped inside its parameters fails the
    checksum; the chain resumes from the older state instead and ends bitwise equal."""
    run = tmp_path / "run"
    cfg = write_yaml(tmp_path / "config.yaml", run_config(run, chains=CHAINS, write_queue=0))
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "kill_at.py"), "done_marked", "3",
         "sample", str(cfg), "--no-progress"],
        env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    path = chain_path(RunDir(run).checkpoints, 0)
    state = read_checkpoint(path)
    done = RunDir(run).open_store().done()[0]
    assert state.step > 0 and done.any() and not done.all()
    name, tensor = next(iter(state.params.items()))
    raw = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    data = bytearray(path.read_bytes())
    at = bytes(data).find(raw)
    assert at >= 0, "the parameters' bytes are stored raw in the checkpoint"
    data[at + 1] ^= 0x04  # one bit of the first parameter
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        read_checkpoint(path)
    capsys.readouterr()
    with pytest.warns(UserWarning, match="checksum"):
        assert cli_main(["sample", str(cfg), "--no-progress"]) == 0
    assert "checksum" in capsys.readouterr().err
    assert_same_arrays(store_arrays(run), reference)
