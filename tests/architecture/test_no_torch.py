"""Reading a run never imports torch: ``reduce``, ``analyze``, ``info`` and ``compare``.

Importing torch costs seconds and gigabytes of address space, and a login or
analysis node may not have a working CUDA stack; the commands that only read a
store must not pay for it. Each command runs in a fresh interpreter on a
planted run (tests/analysis_helpers.py, written without torch), which then
asserts that no ``torch`` module was imported. GPUs are hidden
(CUDA_VISIBLE_DEVICES=""): with one visible, ``reduce.engine: auto`` rightly
imports torch to use it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from losskernel_dist.config import config_from_dict
from losskernel_dist.rundir import RunDir
from tests.analysis_helpers import planted_run, two_task_draws

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from losskernel_dist.cli import main
rc = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
if loaded:
    print("TORCH IMPORTED:", loaded[:5], file=sys.stderr)
    sys.exit(99)
sys.exit(rc)
"""


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _planted(path: Path, seed: int) -> Path:
    """A reduced planted run whose config.yaml is complete, as ``sample`` writes it, and
    asks for both kernels (dense and streamed neighbours: every reduce path on the CPU)."""
    x = two_task_draws(10, 10, chains=2, draws=16, seed=seed)
    planted_run(path, x, labels=np.r_[np.zeros(10, int), np.ones(10, int)],
                label_names=["a", "b"])
    run = RunDir(path)
    data = run.read_config_dict()
    data["reduce"] = {**data.get("reduce", {}), "kernel": "both", "neighbours_k": 3}
    run.write_config(config_from_dict(data))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("no_torch")
    return _planted(base / "a", 0), _planted(base / "b", 1)


@pytest.mark.parametrize("command", ["reduce", "analyze", "info", "compare"])
def test_read_commands_do_not_import_torch(runs: tuple[Path, Path], command: str) -> None:
    a, b = runs
    args = {"reduce": ["reduce", str(a), "--no-progress"],
            "analyze": ["analyze", str(a)],
            "info": ["info", str(a)],
            "compare": ["compare", str(a), str(b)]}[command]
    done = _run(args)
    assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-4000:])


def test_info_reads_the_checkpoint_step_from_its_sidecar(tmp_path: Path) -> None:
    """With a checkpoint on disk, info shows its step without torch (the sidecar);
    without the sidecar (a checkpoint written before them) it still shows it,
    reading the checkpoint with torch."""
    import torch

    from losskernel_dist.checkpoint import ChainState, save_chain
    from losskernel_dist.checkpoint_meta import sidecar_path

    run = _planted(tmp_path / "run", 0)
    ckpt = RunDir(run).checkpoints
    save_chain(ckpt, ChainState(chain=1, step=37, params={"w": torch.zeros(3)},
                                fingerprint="f"))
    done = _run(["info", str(run), "--json"])
    assert done.returncode == 0, done.stderr[-4000:]
    assert '"checkpoint_step": 37' in done.stdout

    sidecar_path(ckpt, 1).unlink()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    code = ("import sys, json; from losskernel_dist.jobs.info import run_info; "
            "info = run_info(sys.argv[1]); "
            "print(json.dumps([c['checkpoint_step'] for c in info['per_chain']]), "
            "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(run)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.split() == ["[null,", "37]", "True"]
