"""Development over training: ``losskernel run`` over two modular checkpoints.

Two shipped checkpoints at tiny sizes go through the CLI end to end: each gets an
ordinary, reduced and analysed run dir; the side-by-side figure and the per-checkpoint
json are written; the two kernels are those of their checkpoints (near-uniform losses at
initialisation, division learned first at step 800, different covariances under the same
SGLD noise, and bitwise what an ordinary run on the checkpoint gives); a second run
resumes without redoing anything. A missing checkpoint file is a config error naming
``development.checkpoints``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from losskernel_dist.cli import main
from losskernel_dist.config import ConfigError, config_from_dict
from losskernel_dist.jobs.development import FIGURE_FILE, SUMMARY_FILE, subrun_dir
from losskernel_dist.rundir import RunDir
from losskernel_dist.tasks import modular

DATA = Path(modular.__file__).resolve().parent / "data"
CHECKPOINTS = [str(DATA / "modular_p97_step000000.pt"), str(DATA / "modular_p97_step000800.pt")]


def development_config(output: Path, checkpoints: list[str]) -> dict:
    """Raw config data: two modular checkpoints, 40 eval samples, 2 chains of 4 draws."""
    return {
        "task": {"target": "losskernel_dist.tasks.modular:build",
                 "args": {"n_eval": 40, "eval_seed": 0}},
        "development": {"checkpoints": checkpoints},
        "sampler": {"chains": 2, "draws": 4, "burnin_steps": 2, "steps_between_draws": 1,
                    "batch_size": 64, "lr": 2.0e-7, "nbeta": 500.0,
                    "localization": 3.0e6, "seed": 0, "checkpoint_every": 10,
                    "device": "cpu", "threads": 1},
        "eval": {"batch_size": 40},
        "reduce": {"block_size": 16, "engine": "dask", "threads": 1},
        "analysis": {"exclude_same_label": False, "umap_neighbours": 5, "cka_grid": 2,
                     "cka_max_draws": 8},
        "output": str(output),
    }


def test_run_over_two_checkpoints(tmp_path, write_config, capsys):
    out = tmp_path / "dev"
    path = write_config(development_config(out, CHECKPOINTS))
    assert main(["run", str(path), "--no-progress"]) == 0
    for i, ckpt in enumerate(CHECKPOINTS):
        run_dir = subrun_dir(out, i, ckpt)
        store = RunDir(run_dir).open_store()
        assert store.has_kernel(), run_dir
        assert store.config["task"]["args"]["checkpoint"] == ckpt
        assert store.read_embedding("umap_2d").shape == (40, 2)
    assert (out / FIGURE_FILE).stat().st_size > 0
    result = json.loads((out / SUMMARY_FILE).read_text())
    names = [entry["name"] for entry in result["checkpoints"]]
    assert names == ["modular_p97_step000000", "modular_p97_step000800"]
    assert all("pc1_auc" in entry["summary"] for entry in result["checkpoints"])
    # each sub-run is the kernel of its own checkpoint: both use the same seed, so the SGLD
    # noise is identical and only the weights differ
    early, late = (RunDir(subrun_dir(out, i, c)).open_store() for i, c in enumerate(CHECKPOINTS))
    labels = early.labels()
    mean0, mean800 = (np.asarray(s.kernel_array("mean")[...]) for s in (early, late))
    assert np.all(np.abs(mean0 - np.log(modular.vocab_size(97))) < 1.0)  # near-uniform at init
    assert mean800.max() < np.log(modular.vocab_size(97)) - 2.0           # trained for 800 steps
    # division is learned first (train accuracy 0.99 against 0.45 for addition at step 800)
    assert np.median(mean800[labels == 1]) < np.median(mean800[labels == 0])
    cov0, cov800 = (np.asarray(s.kernel_array("cov")[...], dtype=np.float64) for s in (early, late))
    assert np.linalg.norm(cov800 - cov0) > 0.5 * max(np.linalg.norm(cov0), np.linalg.norm(cov800))
    # and it is exactly what an ordinary run on that checkpoint gives
    single = development_config(tmp_path / "single", [])
    single["task"]["args"]["checkpoint"] = CHECKPOINTS[1]
    single["analysis"] = {"enabled": False}
    assert main(["run", str(write_config(single, "single.yaml")), "--no-progress"]) == 0
    alone = RunDir(tmp_path / "single").open_store()
    for name in ("mean", "cov", "corr"):
        assert np.array_equal(alone.kernel_array(name)[...], late.kernel_array(name)[...]), name
    # resuming a finished development run redoes nothing and gives the same numbers
    metrics = subrun_dir(out, 0, CHECKPOINTS[0]) / "analysis" / "metrics.json"
    mtime = metrics.stat().st_mtime_ns
    assert main(["run", str(path), "--no-progress"]) == 0
    assert metrics.stat().st_mtime_ns == mtime
    assert json.loads((out / SUMMARY_FILE).read_text())["checkpoints"] == result["checkpoints"]


def test_missing_checkpoint_is_a_config_error(tmp_path):
    data = development_config(tmp_path / "dev", [CHECKPOINTS[0], str(tmp_path / "nope.pt")])
    with pytest.raises(ConfigError, match=r"development\.checkpoints"):
        config_from_dict(data)
    data["development"]["checkpoints"] = "not-a-list.pt"
    with pytest.raises(ConfigError, match=r"development\.checkpoints"):
        config_from_dict(data)
