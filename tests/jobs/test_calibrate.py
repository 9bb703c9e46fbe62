"""``losskernel calibrate``: pilot grids, the recommendation rule, the report, reuse and ranks.

The linear task's settings are derived from its Gaussian target, so what each
must show is known in advance: on a rank-deficient design (two directions the
training data leave flat, like a singular model's valleys) with
P = nbeta X^T X / n + localization I,

* lr * lambda_max(P) / 2 > 2 diverges (the top mode grows geometrically);
* a localization 1e-4 of the data's top curvature lets chains wander along
  the flat directions: flagged as drift;
* localization equal to the top curvature and lr = 4 / (3 * top) contract
  every mode by a factor 3 per step: the chains mix within a few steps and
  two disjoint halves of them agree on the kernel (split-half CKA >= 0.9,
  the default calibrate.min_cka), in the pilots and, as projected, in the
  configured run sampled with the written config.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from losskernel_dist.analysis.cka import cka
from losskernel_dist.cli import main
from losskernel_dist.config import ConfigError, config_from_dict, load_config
from losskernel_dist.jobs.calibration.evaluate import (
    RULE,
    SettingResult,
    draws_needed,
    judge,
    project_cka,
    recommend,
    split_half_cka,
)
from losskernel_dist.jobs.calibration.grid import Setting, grid, pilot_config
from losskernel_dist.store import RunStore
from losskernel_dist.tasks import linear

from ..conftest import linear_config
from ..dist_helpers import REPO, subprocess_env

SINGULAR = {"n": 6, "n_eval": 16, "dim": 8}
NBETA = 10.0
MIN_CKA = 0.9


def data_curvature(args: dict, nbeta: float) -> float:
    """Largest eigenvalue of nbeta * X^T X / n (the data part of the target's precision)."""
    d = linear.make_data(args["n"], args["n_eval"], args["dim"], 1, 0.5, 0)
    return float(np.linalg.eigvalsh(nbeta / args["n"] * d["x"].T @ d["x"]).max())


TOP = data_curvature(SINGULAR, NBETA)
LR_OK, LR_DIVERGE = 4.0 / (3.0 * TOP), 5.0 / TOP
LOC_WEAK, LOC_STRONG = 1e-4 * TOP, TOP


def linear_calibration_config(output: Path, **calibrate) -> dict:
    """The planned run: 4 chains x 100 draws, one every 2 steps (the pilots' spacing too)."""
    data = linear_config(output, args=SINGULAR, nbeta=NBETA, chains=4, draws=100,
                         steps_between_draws=2, burnin_steps=20)
    data["calibrate"] = {
        "lr": [LR_OK, LR_DIVERGE], "localization": [LOC_WEAK, LOC_STRONG],
        "chains_per_setting": 4, "steps": 240, "burnin_fraction": 0.2, "draws": 96,
        "min_cka": MIN_CKA, **calibrate,
    }
    return data


@pytest.fixture(scope="module")
def linear_calibration(tmp_path_factory):
    """One linear calibration through the CLI, with --write; shared by the tests below."""
    root = tmp_path_factory.mktemp("calibrate")
    data = linear_calibration_config(root / "run")
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    written = root / "recommended.yaml"
    args = ["calibrate", str(path), "--no-progress", "--write", str(written)]
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "root": root,
            "config": path, "written": written, "data": data,
            "result": json.loads((root / "run" / "calibration" / "calibration.json").read_text())}


def _by_name(result: dict) -> dict[str, dict]:
    return {s["name"]: s for s in result["settings"]}


def test_linear_divergent_setting_is_reported(linear_calibration):
    settings = _by_name(linear_calibration["result"])
    for loc in (LOC_WEAK, LOC_STRONG):
        s = settings[Setting(LR_DIVERGE, loc, NBETA).name]
        assert s["diverged"] and s["diverged_chains"] == [0, 1, 2, 3]
        assert not s["admissible"] and "diverged" in "; ".join(s["reasons"])


def test_linear_drifting_setting_is_flagged(linear_calibration):
    s = _by_name(linear_calibration["result"])[Setting(LR_OK, LOC_WEAK, NBETA).name]
    assert not s["diverged"] and s["drifting_chains"] and s["drift_flags"]
    assert not s["admissible"] and "chain average flagged for" in "; ".join(s["reasons"])
    assert any("likely fix: raise sampler.localization" in line for line in s["flags"])
    strong = _by_name(linear_calibration["result"])[Setting(LR_OK, LOC_STRONG, NBETA).name]
    assert s["eval_drift"] > 5 * strong["eval_drift"]  # wandering shows in the eval loss


def test_linear_recommendation_and_its_split_half_cka(linear_calibration):
    result = linear_calibration["result"]
    assert linear_calibration["code"] == 0, linear_calibration["stderr"]
    assert result["recommended"] == {"lr": LR_OK, "localization": LOC_STRONG, "nbeta": NBETA}
    best = _by_name(result)[result["recommended_name"]]
    assert best["admissible"] and best["split_half_cka"] >= MIN_CKA
    assert best["cka_draws"] == [192, 192]  # 2 chains x 96 draws per half
    assert best["projected_cka"] >= MIN_CKA  # halves of 200 draws in the run
    assert result["rule"] == RULE.format(min_cka=MIN_CKA, run_draws=400)
    out = linear_calibration["stdout"]
    assert "rule: A setting is admissible" in out
    assert f"recommended: sampler.lr={LR_OK:g} sampler.localization={LOC_STRONG:g}" in out


def test_report_and_written_config(linear_calibration):
    cal_dir = linear_calibration["root"] / "run" / "calibration"
    page = (cal_dir / "index.html").read_text()
    assert "Among admissible settings the recommendation is the one with the largest lr" in page
    assert page.count("data:image/png;base64,") == 3  # loss, distance, CKA map
    assert "RECOMMENDED" in page
    written = load_config(linear_calibration["written"])
    assert (written.sampler.lr, written.sampler.localization) == (LR_OK, LOC_STRONG)
    assert written.sampler.burnin_steps == 48  # raised to the pilots' burn-in
    assert written.sampler.chains == linear_calibration["data"]["sampler"]["chains"]


def test_the_recommended_run_is_as_reproducible_as_projected(linear_calibration):
    """Sample the written config for real (a fresh output): its two halves of chains agree."""
    data = yaml.safe_load(linear_calibration["written"].read_text())
    data["output"] = str(linear_calibration["root"] / "recommended_run")
    path = linear_calibration["root"] / "recommended_run.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["sample", str(path), "--no-progress"]) == 0
    store = RunStore.open(linear_calibration["root"] / "recommended_run" / "store.zarr")
    value, counts = split_half_cka(store)
    assert counts == (200, 200)
    assert value >= MIN_CKA


def test_split_half_cka_is_the_cka_of_the_two_halves_kernels(linear_calibration):
    config = config_from_dict(linear_calibration["data"])
    store = RunStore.open(pilot_config(config, Setting(LR_OK, LOC_STRONG, NBETA)).run_dir
                          / "store.zarr")
    x = store.losses_array()[...].astype(np.float64)
    k_a = np.cov(x[:2].reshape(-1, x.shape[2]), rowvar=False)
    k_b = np.cov(x[2:].reshape(-1, x.shape[2]), rowvar=False)
    value, counts = split_half_cka(store)
    assert counts == (192, 192)
    assert value == pytest.approx(cka(k_a, k_b), rel=1e-9)
    assert store.has_kernel()  # small N: pilots are reduced, for 'losskernel analyze'


def test_sample_into_the_calibrated_output_is_allowed(linear_calibration):
    """The run directory holds only calibration/ so far: sampling it is not refused."""
    data = dict(linear_calibration["data"])
    data["sampler"] = dict(data["sampler"], draws=4, burnin_steps=2)
    path = linear_calibration["root"] / "main.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["sample", str(path), "--no-progress"]) == 0


# ------------------------------------------------------------------ rule and grid


def _result(lr: float, loc: float, *, cka: float | None = 0.95, diverged=(), drift=()):
    return SettingResult(
        setting=Setting(lr, loc, 1.0), chains=4, chains_sampled=4,
        diverged_chains=list(diverged), drifting_chains=[], drift_flags=list(drift),
        train_loss_ref=0.1, train_loss_late=0.2, train_drift=0.1, eval_loss_ref=0.1,
        eval_loss_late=0.2, eval_drift=0.1, distance_final=1.0, split_half_cka=cka,
        cka_draws=(10, 10),
    )


def test_rule_prefers_the_largest_stable_lr_then_the_weakest_localization():
    config = config_from_dict(linear_calibration_config(Path("unused")))
    results = [
        _result(1e-2, 10.0, diverged=[0]),
        _result(1e-3, 10.0), _result(1e-3, 1.0), _result(1e-3, 0.1, drift=["distance growth: ..."]),
        _result(1e-4, 0.1, cka=0.99),
        _result(1e-3, 100.0, cka=0.5),
    ]
    for r in results:
        judge(r, config.calibrate, run_draws=20)  # halves of 10 draws, as in the pilots
    assert [r.admissible for r in results] == [False, True, True, False, True, False]
    assert "split-half CKA 0.500, projected to the run 0.500 < 0.9" in results[-1].reasons
    assert recommend(results) == Setting(1e-3, 1.0, 1.0)
    assert recommend([r for r in results if r.setting.lr != 1e-3]) == Setting(1e-4, 0.1, 1.0)
    assert recommend(results[:1]) is None


def test_cka_projection_follows_the_noise_model():
    """Kernels K + noise of variance 1/m: the projection from m = 20 predicts m = 200."""
    rng = np.random.default_rng(0)
    n = 30
    basis = rng.normal(size=(n, 3))
    truth = basis @ basis.T

    def estimate(m: int) -> np.ndarray:
        noise = rng.normal(size=(n, n)) * 10.0 / np.sqrt(m)
        return truth + (noise + noise.T) / 2

    def mean_cka(m: int) -> float:
        return float(np.mean([cka(estimate(m), estimate(m)) for _ in range(200)]))

    low, high = mean_cka(20), mean_cka(200)
    assert low < 0.8 and high > 0.9
    assert project_cka(low, 20, 200) == pytest.approx(high, abs=0.02)
    assert project_cka(0.5, 10, 10) == 0.5 and project_cka(0.5, 10, 90) == pytest.approx(0.9)
    assert draws_needed(0.5, 10, 0.9) == 180  # two halves of 90


def test_default_grid_brackets_the_configured_setting():
    data = linear_config(Path("unused"), lr=1e-6, localization=3e4, nbeta=500.0)
    settings = grid(config_from_dict(data))
    assert sorted({s.lr for s in settings}) == pytest.approx([1e-7, 1e-6, 1e-5])
    assert sorted({s.localization for s in settings}) == pytest.approx([3e3, 3e4, 3e5])
    assert {s.nbeta for s in settings} == {500.0} and len(settings) == 9
    data["calibrate"] = {"nbeta": [500, 5000], "lr": [1e-6], "localization": [0]}
    assert [s.name for s in grid(config_from_dict(data))] == [
        "lr1e-06_loc0_nbeta500", "lr1e-06_loc0_nbeta5e+03"]
    data["calibrate"] = {"lr": [1e-6, 1.0001e-6]}
    with pytest.raises(ConfigError, match="collide"):
        grid(config_from_dict(data))


def test_calibrate_config_errors_name_the_key():
    data = linear_config(Path("unused"))
    for bad, needle in [({"chains_per_setting": 1}, "calibrate.chains_per_setting"),
                        ({"lr": [0]}, "calibrate.lr: values must be > 0"),
                        ({"draws": 50, "steps": 60}, "calibrate.steps"),
                        ({"min_cka": 2}, "calibrate.min_cka")]:
        data["calibrate"] = bad
        with pytest.raises(ConfigError, match=needle):
            config_from_dict(data)


# ------------------------------------------------------------------ reuse and ranks


def test_pilots_made_from_other_weights_are_refused(tmp_path, write_config, capsys,
                                                    weights_task):
    """A pilot cache keyed only on the settings would silently answer for another model."""
    weights = weights_task
    torch.save(torch.zeros(1, 8), weights)
    data = linear_config(tmp_path / "run")
    data["task"] = {"target": "weights_task:build", "args": {"path": str(weights)}}
    data["calibrate"] = {"lr": [1e-3], "localization": [10.0], "chains_per_setting": 2,
                         "steps": 16, "draws": 8}
    path = write_config(data)
    assert main(["calibrate", str(path), "--no-progress", "--min-cka", "0"]) in (0, 3)
    pilot = tmp_path / "run" / "calibration" / "lr0.001_loc10_nbeta100"
    before = {p: p.read_bytes() for p in sorted(pilot.rglob("*")) if p.is_file()}
    capsys.readouterr()
    torch.save(torch.ones(1, 8), weights)  # retrained model, same config
    assert main(["calibrate", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "different model" in err and "refusing" in err
    assert {p: p.read_bytes() for p in sorted(pilot.rglob("*")) if p.is_file()} == before


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_ranks_share_the_pilot_chains(tmp_path):
    """Two ranks run the pilot chains between them; the pilots equal a one-process
    calibration's bit for bit (draws depend only on seed, chain and step)."""
    def config(name: str) -> Path:
        data = linear_calibration_config(tmp_path / name / "run", steps=40, draws=8,
                                         chains_per_setting=2)
        data["calibrate"]["lr"] = [LR_OK]
        path = tmp_path / name / "config.yaml"
        path.parent.mkdir()
        path.write_text(yaml.safe_dump(data))
        return path

    one = config("one")
    assert main(["calibrate", str(one), "--no-progress", "--min-cka", "0"]) in (0, 3)
    two = config("two")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "losskernel_dist.cli", "calibrate", str(two), "--no-progress",
           "--min-cka", "0"]
    proc = subprocess.run(cmd, env=subprocess_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    assert proc.stdout.count("sampled chains [0]") == 2  # each rank: chain 0 or 1 of a setting
    assert proc.stdout.count("sampled chains [1]") == 2
    assert proc.stdout.count("rule: ") == 1  # only rank 0 reports
    for loc in (LOC_WEAK, LOC_STRONG):
        name = Setting(LR_OK, loc, NBETA).name
        a = RunStore.open(tmp_path / "one" / "run" / "calibration" / name / "store.zarr")
        b = RunStore.open(tmp_path / "two" / "run" / "calibration" / name / "store.zarr")
        assert a.losses_array()[...].tobytes() == b.losses_array()[...].tobytes()
        assert b.done().all()


def test_array_shards_sample_disjoint_shares_then_a_plain_call_reports(tmp_path, write_config,
                                                                        capsys):
    data = linear_calibration_config(tmp_path / "run", steps=24, draws=8, chains_per_setting=2)
    data["calibrate"]["lr"] = [LR_OK]
    path = write_config(data)
    cal_dir = tmp_path / "run" / "calibration"
    names = [Setting(LR_OK, loc, NBETA).name for loc in (LOC_WEAK, LOC_STRONG)]
    assert main(["calibrate", str(path), "--no-progress", "--shard", "1/2"]) == 0
    out = capsys.readouterr().out
    assert out.count("sampled chains [1]") == 2 and "sampled chains [0]" not in out
    for name in names:  # share 1 of 2: chain 1 of each setting, nothing else
        done = RunStore.open(cal_dir / name / "store.zarr").done()
        assert done[1].all() and not done[0].any()
    assert not (cal_dir / "calibration.json").exists()
    assert main(["calibrate", str(path), "--no-progress", "--shard", "0/2"]) == 0
    capsys.readouterr()
    assert main(["calibrate", str(path), "--no-progress", "--min-cka", "0"]) == 0
    out = capsys.readouterr().out
    assert "sampled chains [0, 1]: 0 draws" in out  # everything was there: nothing resampled
    assert (cal_dir / "calibration.json").exists()
    assert main(["calibrate", str(path), "--shard", "2/2"]) == 2


@pytest.mark.slow
def test_modular_calibration(tmp_path, write_config, capsys):
    """The paper's Section 3 transformer (shipped checkpoint, loss ~0.001 at w*), nbeta 500,
    b = 256, planned run the paper's 30 chains x 800 draws. Pilot chains measured on this
    checkpoint: lr 1e-6 takes the loss to chance level (~5.3) within ~30 steps at
    localization 3e4, and overflows at 1e7 (lr * localization / 2 = 5 > 2); lr 1e-7 at
    localization 3e4 keeps diffusing away from w* (||w - w*|| rising through every
    quarter); lr 1e-7 at localization 1e7 settles within a few steps (lr * loc / 2 = 0.5)."""
    data = {
        "task": {"target": "losskernel_dist.tasks.modular:build",
                 "args": {"n_eval": 100, "eval_seed": 0}},
        "sampler": {"chains": 30, "draws": 800, "burnin_steps": 200, "steps_between_draws": 1,
                    "batch_size": 256, "lr": 1e-7, "nbeta": 500.0, "localization": 3e4,
                    "seed": 0, "checkpoint_every": 0, "device": "cpu", "threads": 1},
        "eval": {"batch_size": 1000},
        "calibrate": {"lr": [1e-7, 1e-6], "localization": [3e4, 1e7], "chains_per_setting": 2,
                      "steps": 60, "burnin_fraction": 1 / 3, "min_cka": MIN_CKA},
        "output": str(tmp_path / "run"),
    }
    assert main(["calibrate", str(write_config(data)), "--no-progress"]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "run" / "calibration" / "calibration.json").read_text())
    settings = _by_name(result)
    for loc in (3e4, 1e7):
        blown = settings[Setting(1e-6, loc, 500.0).name]
        assert blown["diverged"] and blown["diverged_chains"] == [0, 1], blown["flags"]
    drift = settings[Setting(1e-7, 3e4, 500.0).name]
    assert not drift["diverged"] and any(f.startswith("distance growth")
                                         for f in drift["drift_flags"])
    assert not drift["admissible"]
    assert result["recommended"] == {"lr": 1e-7, "localization": 1e7, "nbeta": 500.0}, out
    best = settings[result["recommended_name"]]
    assert best["train_drift"] < 0.05 and best["eval_drift"] < 0.05
    assert best["cka_draws"] == [40, 40] and 0 < best["split_half_cka"] < 1
    assert best["projected_cka"] >= MIN_CKA  # for halves of 12,000 draws
