"""Guard rails: the losses at w*, ||w - w*|| at the draws, and the per-chain verdicts.

The recorded quantities are checked against independent computations; the
verdicts on real linear-task runs whose behaviour follows from the Gaussian
target's closed form (a step past the stability limit diverges, a weakly
localized chain wanders along the directions the data leave flat); the
decision rules on synthetic series where the right answer is known.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from losskernel_dist.cli import main
from losskernel_dist.config import GuardsConfig, config_from_dict
from losskernel_dist.guards.judge import check_arrays, check_run
from losskernel_dist.guards.measure import measure_reference
from losskernel_dist.jobs.run import analyze_run_dir as analyze_run
from losskernel_dist.jobs.sample import sample
from losskernel_dist.rng import minibatch_indices
from losskernel_dist.sampler.batched import run_chains_batched
from losskernel_dist.sampler.chain import run_chain
from losskernel_dist.sampler.data import EvalShards
from losskernel_dist.sampler.functional import FunctionalLoss
from losskernel_dist.store import RunStore
from losskernel_dist.tasks import linear

from ..conftest import linear_config

CPU = torch.device("cpu")

# A rank-deficient design (n = 6 < dim = 8): two directions the training data leave
# flat, as in a singular model. Only the localization holds a chain there.
SINGULAR = {"n": 6, "n_eval": 16, "dim": 8}


def precision_spectrum(args: dict, nbeta: float) -> np.ndarray:
    """Eigenvalues of nbeta * X^T X / n, the data part of the Gaussian target's precision."""
    d = linear.make_data(args["n"], args["n_eval"], args["dim"], 1, 0.5, 0)
    return np.linalg.eigvalsh(nbeta / args["n"] * d["x"].T @ d["x"]).astype(float)


def test_distance_is_the_norm_from_w_star_in_both_samplers():
    from losskernel_dist.jobs.sample import settings_from

    task = linear.build(n=64, n_eval=8, dim=5)
    fl = FunctionalLoss(task, CPU)
    shards = EvalShards(task.eval, 8, CPU, cache=True)
    data = linear_config("unused", draws=6, burnin_steps=2, checkpoint_every=1, batch_size=16)
    settings = settings_from(config_from_dict(data))
    anchor = fl.initial_params()
    events = [e for e in run_chain(fl, task.train, shards, settings, chain=1) if e.draw is not None]
    assert len(events) == 6
    for e in events:
        want = torch.sqrt(sum(((e.params[k] - anchor[k]) ** 2).sum() for k in anchor))
        assert e.distance == pytest.approx(float(want), rel=1e-6)
        assert e.distance > 0
    batched = [e for e in run_chains_batched(fl, task.train, shards, settings, [0, 1])
               if e.draw is not None and e.chain == 1]
    np.testing.assert_allclose([e.distance for e in batched], [e.distance for e in events],
                               rtol=1e-5)


def test_run_records_reference_distance_and_eval_means(tmp_path):
    """n = 128 <= 8 minibatches of 64: the reference is the whole training set's mean loss."""
    cfg = config_from_dict(linear_config(tmp_path / "run"))
    sample(cfg, progress=False)
    store = RunStore.open(tmp_path / "run" / "store.zarr")
    task = linear.build(n=128, n_eval=24)
    x, y = task.train.tensors
    e, z = task.eval.tensors
    with torch.no_grad():
        train_ref = linear.linear_loss(task.model, [x, y]).double().mean()
        eval_ref = linear.linear_loss(task.model, [e, z])
    ref = store.reference()
    assert ref["train_source"] == "the whole training set" and ref["train_samples"] == 128
    assert ref["train_loss"] == pytest.approx(float(train_ref), rel=1e-6)
    np.testing.assert_allclose(ref["eval_losses"], eval_ref.numpy(), rtol=1e-6)
    assert ref["eval_loss_mean"] == pytest.approx(float(eval_ref.double().mean()), rel=1e-6)
    losses = store.losses_array()[...]
    np.testing.assert_allclose(store.eval_means(), losses.mean(axis=2), rtol=1e-5)
    dist = store.distances()
    assert np.isfinite(dist).all() and (dist > 0).all()
    assert not store.write_reference(np.zeros(24), {"train_loss": 1.0})  # written once only
    assert store.reference()["train_loss"] == pytest.approx(float(train_ref), rel=1e-6)


def test_reference_of_a_large_training_set_uses_chain_0s_first_minibatches():
    task = linear.build(n=128, n_eval=8)
    fl = FunctionalLoss(task, CPU)
    shards = EvalShards(task.eval, 8, CPU, cache=True)
    _, attrs = measure_reference(fl, task.train, shards, seed=5, batch_size=4, eval_batch_size=8)
    x, y = task.train.tensors
    idx = np.concatenate([minibatch_indices(5, 0, step, 128, 4) for step in range(8)])
    with torch.no_grad():
        want = linear.linear_loss(task.model, [x[idx], y[idx]]).double().mean()
    assert attrs["train_samples"] == 32 and "first 8 minibatches" in attrs["train_source"]
    assert attrs["train_loss"] == pytest.approx(float(want), rel=1e-6)


# ------------------------------------------------------------------ decision rules


def _arrays(chains: int = 1, steps: int = 200, draws: int = 40):
    train = np.full((chains, steps), 0.1)
    dist = np.ones((chains, draws))
    evals = np.full((chains, draws), 0.2)
    done = np.ones((chains, draws), bool)
    status = np.zeros(chains, np.int8)
    return train, dist, evals, done, status


def _kinds(checks) -> list[list[str]]:
    return [sorted(f.kind for f in c.flags) for c in checks]


def test_steady_chains_are_not_flagged_even_when_noisy():
    rng = np.random.default_rng(0)
    train, dist, evals, done, status = _arrays(chains=50)
    train += rng.normal(0, 0.05, train.shape)
    dist += rng.normal(0, 0.2, dist.shape)  # a small model's distance fluctuates visibly
    checks = check_arrays(train, dist, evals, done, status, {}, 0.1, 0.2, GuardsConfig())
    flagged = sum(bool(c.flags) for c in checks)
    assert flagged <= 2, _kinds(checks)  # quarter test plus 2-sigma: rare false alarms


def test_growing_distance_loss_drift_and_blowup_are_flagged():
    guards = GuardsConfig()  # tolerance max(0.5, 1.0 x |L*|)
    train, dist, evals, done, status = _arrays(chains=5)
    dist[0] = np.sqrt(np.arange(1, 41))  # diffusing away: sqrt(t)
    train[1, -60:] = 0.75  # +0.65 above L* = 0.1 late: drift
    train[2, -60:] = 5.0  # +4.9 > 4 tolerances: blew up
    evals[3, -12:] = 1.0  # eval loss drifts while the train loss stays put
    status[4] = 1
    checks = check_arrays(train, dist, evals, done, status, {"4": "chain 4 diverged at step 9"},
                          0.1, 0.2, guards)
    assert _kinds(checks) == [["distance_growth"], ["loss_drift"], ["blew_up"], ["loss_drift"],
                              ["diverged"]]
    assert checks[4].flags[0].message == "diverged at step 9"
    assert checks[0].distance_growth > 0.1
    assert "eval loss" in checks[3].flags[0].message
    assert all("sampler." in f.fix for c in checks for f in c.flags)


def test_tolerance_is_relative_for_large_losses():
    train, dist, evals, done, status = _arrays(chains=2)
    train[:] = 100.0
    evals[:] = 100.0
    train[0, -60:] = 140.0  # +40% of L* = 100: within max(0.5, 1.0 x 100)
    train[1, -60:] = 250.0  # +150%
    checks = check_arrays(train, dist, evals, done, status, {}, 100.0, 100.0, GuardsConfig())
    assert _kinds(checks) == [[], ["loss_drift"]]


def test_settling_then_steady_distance_is_not_flagged():
    """Relaxation finished during burn-in (only draws count): a flat curve after it."""
    train, dist, evals, done, status = _arrays(chains=1)
    t = np.arange(40)
    dist[0] = 3.0 * (1 - np.exp(-(t + 20) / 3.0))
    checks = check_arrays(train, dist, evals, done, status, {}, 0.1, 0.2, GuardsConfig())
    assert _kinds(checks) == [[]]


# ------------------------------------------------------------------ real runs


def test_diverging_runs_are_reported_with_the_fix(tmp_path, write_config, capsys):
    """Past the stability limit lr * lambda_max / 2 = 2 the top mode grows geometrically: by
    a factor 3 per step at lr = 8 / lambda_max (still finite after the run's 30 steps: the
    guard calls it blown up), by 19 at lr = 40 / lambda_max (non-finite: the sampler stops)."""
    lam = float(precision_spectrum({"n": 128, "n_eval": 24, "dim": 8}, 100.0).max()) + 10.0
    path = write_config(linear_config(tmp_path / "finite", lr=8.0 / lam), "finite.yaml")
    assert main(["sample", str(path), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("blew up: late mean train loss") == 2
    assert "likely fix: lower sampler.lr" in err

    path = write_config(linear_config(tmp_path / "nan", lr=40.0 / lam), "nan.yaml")
    assert main(["sample", str(path), "--no-progress"]) == 3
    capsys.readouterr()
    assert main(["info", str(tmp_path / "nan")]) == 0
    out = capsys.readouterr().out
    assert "2 chain(s) flagged" in out and out.count("diverged at step") >= 2
    assert "likely fix: lower sampler.lr" in out


def _analysed_report(run) -> str:
    """Reduce and analyse a sampled run; the HTML report's text."""
    assert main(["reduce", str(run), "--no-progress"]) == 0
    metrics = analyze_run(run)
    assert metrics["summary"]["guard_flagged_chains"] == len(metrics["guards"]["flagged_chains"])
    return (run / "analysis" / "index.html").read_text()


def test_weak_localization_is_flagged_and_an_error_when_configured(tmp_path, write_config,
                                                                   capsys):
    top = float(precision_spectrum(SINGULAR, 10.0).max())
    strong = linear_config(tmp_path / "strong", args=SINGULAR, nbeta=10.0, lr=1.0 / (2 * top),
                           localization=top, chains=4, draws=40, burnin_steps=40,
                           steps_between_draws=2)
    assert main(["sample", str(write_config(strong, "strong.yaml")), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err
    report = check_run(RunStore.open(tmp_path / "strong" / "store.zarr"), GuardsConfig())
    assert not report.flagged, report.lines()
    assert "No chain flagged" in _analysed_report(tmp_path / "strong")

    weak = dict(strong, output=str(tmp_path / "weak"))
    weak["sampler"] = dict(strong["sampler"], localization=1e-4 * top)
    assert main(["sample", str(write_config(weak, "weak.yaml")), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "losskernel: warning: chain" in err and "likely fix: raise sampler.localization" in err
    report = check_run(RunStore.open(tmp_path / "weak" / "store.zarr"), GuardsConfig())
    # A chain's wandering in the two flat directions is a 2-d random walk: how far it gets
    # varies from chain to chain, but on average the eval loss rises far past the tolerance
    # while the training loss (exactly 0 at w*, an interpolating fit) barely moves.
    assert report.flagged and not any(c.divergent for c in report.chains)
    assert np.mean([c.eval_increase for c in report.chains]) > 2 * report.eval_tolerance
    assert max(c.train_increase for c in report.chains) < report.loss_tolerance
    html = _analysed_report(tmp_path / "weak")  # the report carries every flag and its fix
    assert f"{len(report.flagged)} chain(s) flagged" in html
    items = re.findall(r"<li>(chain \d+ [^<]*)</li>", html)
    assert len(items) == len(report.lines())
    assert all("likely fix: raise sampler.localization" in item for item in items)

    weak["guards"] = {"action": "error"}
    assert main(["sample", str(write_config(weak, "weak.yaml")), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"losskernel: error: {len(report.flagged)} chain(s) flagged")
    assert len(err.splitlines()) == 1
