"""The Python API (``import losskernel_dist as lk``) on real, small runs.

The API and the ``losskernel`` command must be the same job: the same stores bit
for bit, the same info, the same errors. ``Run`` must hand back exactly what the
store holds, as labelled, lazy xarray objects. ``loss_kernel`` runs a Task built
in this process, resumes it after a crash, and refuses what it cannot do
(unknown settings, SLURM, the command line).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr
import yaml

import losskernel_dist as lk
from losskernel_dist.cli import main
from losskernel_dist.errors import (
    ConfigError,
    LosskernelError,
    RunDirError,
    StoreError,
    SubmitError,
    TaskError,
)
from losskernel_dist.store import RunStore

from ..conftest import linear_config

REPO = Path(__file__).resolve().parents[2]
STORE_ARRAYS = ("losses", "done", "kernel/cov", "kernel/corr", "kernel/mean", "kernel/var")


def linear_data(output: Path, analysis: bool = False, **reduce: Any) -> dict:
    """The linear task with two label groups (blocks), small enough to run in a second."""
    data = linear_config(output, args={"n": 128, "n_eval": 30, "blocks": 2})
    data["analysis"] = {"enabled": analysis}
    data["reduce"].update(reduce)
    return data


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def store_arrays(run_dir: Path, names: tuple[str, ...] = STORE_ARRAYS) -> dict[str, np.ndarray]:
    group = RunStore.open(Path(run_dir) / "store.zarr").group
    return {name: np.asarray(group[name][...]) for name in names}


def assert_bitwise_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].shape == want[name].shape, name
        assert np.array_equal(got[name], want[name], equal_nan=True), f"{name} differs"


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("losskernel: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> Path:
    """A linear run made by ``lk.run(lk.load_config(path))``, analysis included."""
    root = tmp_path_factory.mktemp("api")
    path = write_yaml(root / "a.yaml", linear_data(root / "a", analysis=True))
    run = lk.run(lk.load_config(path), progress=False)
    assert isinstance(run, lk.Run) and run.path == root / "a"
    return root / "a"


# ---------------------------------------------------------------------- API == CLI


def test_cli_run_gives_the_api_runs_store_bit_for_bit(analysed, tmp_path, capsys):
    path = write_yaml(tmp_path / "b.yaml", linear_data(tmp_path / "b", analysis=True))
    assert main(["run", str(path), "--no-progress"]) == 0
    assert "analysis written to" in capsys.readouterr().out
    assert_bitwise_equal(store_arrays(tmp_path / "b"), store_arrays(analysed))
    assert (json.loads((tmp_path / "b" / "analysis" / "metrics.json").read_text())["summary"]
            == lk.open_run(analysed).metrics["summary"])


def test_sample_reduce_analyze_steps_equal_run(analysed, tmp_path):
    out = tmp_path / "steps"
    config = lk.load_config(linear_data(out, analysis=True))
    run = lk.sample(config, progress=False)
    assert run.sample_report.draws_written == 2 * 20 and not run.sample_report.failed
    opened = lk.open_run(out)
    with pytest.raises(LosskernelError) as err:  # not reduced yet
        opened.kernel()
    assert isinstance(err.value, StoreError)
    assert "\n" not in str(err.value) and "lk.reduce" in str(err.value)
    with pytest.raises(RunDirError, match="not been analysed"):
        opened.metrics  # noqa: B018
    assert not opened.report_path.exists()

    assert lk.reduce(run, allow_partial=False, progress=False) is run
    assert run.reduce_report.draws_used == 40
    assert np.array_equal(opened.kernel("corr").values, store_arrays(analysed)["kernel/corr"])
    lk.analyze(out)
    assert opened.report_path.is_file() and opened.report_path == out / "analysis" / "index.html"
    assert opened.metrics["summary"] == lk.open_run(analysed).metrics["summary"]
    assert_bitwise_equal(store_arrays(out), store_arrays(analysed))


# ---------------------------------------------------------------------- Run, read back


def test_kernel_is_the_stored_kernel_as_a_lazy_labelled_dataarray(analysed):
    run = lk.open_run(analysed)
    stored = store_arrays(analysed)
    labels = np.asarray(RunStore.open(analysed / "store.zarr").labels())
    assert set(labels.tolist()) == {0, 1}
    for kind in ("corr", "cov"):
        k = run.kernel(kind)
        assert isinstance(k, xr.DataArray)
        assert k.dims == ("sample_i", "sample_j")
        assert isinstance(k.data, da.Array) and k.chunks is not None
        assert len(k.chunks[0]) > 1  # the store's tiles (reduce.block_size 7), not one block
        assert k.dtype == stored[f"kernel/{kind}"].dtype
        assert np.array_equal(k.values, stored[f"kernel/{kind}"])
        assert np.array_equal(k["label_i"].values, labels)
        assert np.array_equal(k["label_j"].values, labels)
        assert np.array_equal(k["block_i"].values, labels)  # the task's attribute
        assert k.attrs["draws_used"] == 40
    default = run.kernel()
    assert default.name == "corr" and np.array_equal(default.values, stored["kernel/corr"])
    # labels select: the within-block corner of rho, straight from the coordinates
    within = run.kernel("corr").where(
        (run.kernel().label_i == 0) & (run.kernel().label_j == 0), drop=True)
    first = np.flatnonzero(labels == 0)
    assert np.array_equal(within.values, stored["kernel/corr"][np.ix_(first, first)])


def test_kernel_kind_is_checked(analysed):
    with pytest.raises(ConfigError, match="'corr' or 'cov'"):
        lk.open_run(analysed).kernel("bogus")


def test_losses_are_the_stored_losses(analysed):
    run = lk.open_run(analysed)
    losses = run.losses()
    assert isinstance(losses, xr.DataArray) and isinstance(losses.data, da.Array)
    assert losses.dims == ("chain", "draw", "sample")
    assert losses.shape == (2, 20, 30)
    stored = store_arrays(analysed, ("losses", "done"))
    assert np.array_equal(losses.values, stored["losses"])
    assert np.array_equal(losses["done"].values, stored["done"])
    assert losses["usable"].values.all()
    # the pooled mean of the draws is the kernel's mean (the reduction's pass 1)
    mean = losses.stack(m=("chain", "draw")).astype("float64").mean("m").values
    np.testing.assert_allclose(mean, store_arrays(analysed, ("kernel/mean",))["kernel/mean"],
                               rtol=1e-12)


def test_info_is_what_the_cli_prints(analysed, capsys):
    info = lk.open_run(analysed).info()
    assert main(["info", str(analysed), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    canonical = json.loads(json.dumps(info, default=str))
    assert json.dumps(printed, sort_keys=True) == json.dumps(canonical, sort_keys=True)
    assert info["draws_done"] == info["draws_total"] == 40 and info["reduced"]


def test_config_metrics_and_report(analysed):
    run = lk.open_run(analysed)
    assert isinstance(run.config, lk.Config)
    assert run.config.sampler.chains == 2 and run.config.run_dir == analysed
    assert run.metrics == json.loads((analysed / "analysis" / "metrics.json").read_text())
    assert run.metrics["summary"]["n"] == 30
    assert run.report_path.is_file() and run.report_path.read_text().lstrip().startswith("<")
    assert repr(run) == f"Run({str(analysed)!r})"


def test_open_run_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(RunDirError, match="not a run directory"):
        lk.open_run(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(linear_data(tmp_path)))
    with pytest.raises(RunDirError, match="no store yet"):
        lk.open_run(tmp_path)


def test_streamed_neighbours(tmp_path):
    """reduce.kernel both: run.neighbours() are the top-k of the dense rho; neighbours
    only: there is no kernel, and kernel() says where the lists are."""
    both = lk.run(lk.load_config(linear_data(
        tmp_path / "both", kernel="both", neighbours_k=4, neighbours_bottom_k=2)), progress=False)
    lists = both.neighbours()
    assert lists["top_index"].shape == (30, 4) and lists["bottom_index"].shape == (30, 2)
    corr = both.kernel("corr")
    rho = corr.values.astype(np.float64)
    # self and (analysis.exclude_same_label, the default) the row's own label are excluded
    rho[corr["label_i"].values[:, None] == corr["label_j"].values[None, :]] = -np.inf
    best = -np.sort(-rho, axis=1)[:, :4]
    np.testing.assert_allclose(lists["top_value"], best, atol=1e-6)
    assert all(rho[i, lists["top_index"][i]].min() >= best[i, -1] - 1e-6 for i in range(30))

    only = lk.run(lk.load_config(linear_data(
        tmp_path / "only", kernel="neighbours", neighbours_k=4, neighbours_bottom_k=2)),
        progress=False)
    assert np.array_equal(only.neighbours()["top_index"], lists["top_index"])
    with pytest.raises(StoreError, match=r"run.neighbours\(\)"):
        only.kernel()


# ---------------------------------------------------------------------- loss_kernel


class Crash(Exception):
    """What the failing loss raises: a process that died in the middle of sampling."""


def tiny_task(calls: list[int] | None = None, fail_after: int | None = None,
              error: type[BaseException] = Crash) -> lk.Task:
    """A two-class MLP on 96 points, built fresh each time with the same weights and data.

    ``calls`` counts loss calls; with ``fail_after`` the loss raises ``error`` from then on.
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))

    def loss(m: torch.nn.Module, batch: Any) -> torch.Tensor:
        if calls is not None:
            calls[0] += 1
            if fail_after is not None and calls[0] > fail_after:
                raise error(f"loss call {calls[0]}")
        inputs, targets = batch
        return torch.nn.functional.cross_entropy(m(inputs), targets, reduction="none")

    train = torch.utils.data.TensorDataset(x, y)
    eval_set = torch.utils.data.TensorDataset(x[:20], y[:20])
    return lk.Task(model=model, train=train, eval=eval_set, loss=loss, labels=y[:20],
                   attributes={"x0": x[:20, 0]})


SETTINGS = {"chains": 2, "draws": 12, "burnin_steps": 4, "batch_size": 16, "lr": 1e-3,
            "nbeta": 20.0, "localization": 100.0, "checkpoint_every": 3, "seed": 5,
            "device": "cpu", "threads": 1}
OVERRIDES = {"eval.batch_size": 10, "reduce.block_size": 8, "analysis.enabled": False}
TOTAL = 2 * 12


@pytest.fixture(scope="module")
def in_memory(tmp_path_factory) -> tuple[Path, int]:
    """An uninterrupted loss_kernel run, analysis included; and how many loss calls it made."""
    out = tmp_path_factory.mktemp("mem") / "whole"
    calls = [0]
    run = lk.loss_kernel(tiny_task(calls), output=out, progress=False,
                         overrides={**OVERRIDES, "analysis.enabled": True}, **SETTINGS)
    assert run.sample_report.draws_written == TOTAL and not run.sample_report.failed
    return out, calls[0]


def test_loss_kernel_runs_end_to_end(in_memory):
    out, calls = in_memory
    run = lk.open_run(out)
    assert run.config.task.target == "losskernel_dist.api:in_memory_task"
    assert run.config.sampler.lr == 1e-3 and run.config.sampler.draws == 12
    assert run.config.eval.batch_size == 10
    assert run.losses().shape == (2, 12, 20) and bool(run.losses()["done"].all())
    corr = run.kernel("corr")
    assert np.array_equal(corr["label_i"].values, tiny_task().labels)
    assert "x0_i" in corr.coords
    # the kernel is the correlation of the pooled draws (float32 in the store)
    pooled = run.losses().values.reshape(TOTAL, 20).astype(np.float64)
    np.testing.assert_allclose(corr.values, np.corrcoef(pooled, rowvar=False), atol=1e-5)
    assert run.report_path.is_file() and run.metrics["summary"]["n"] == 20
    assert calls > TOTAL


@pytest.mark.parametrize("error", [Crash, KeyboardInterrupt])
def test_interrupted_loss_kernel_resumes_to_the_same_draws(in_memory, tmp_path, error):
    """A loss that fails in chain 1 (an exception, or an abort that drops the commits still
    queued): the healthy task resumes from the checkpoints on disk to the same bits."""
    whole, calls = in_memory
    out = tmp_path / "resumed"
    with pytest.raises(error):
        lk.loss_kernel(tiny_task([0], fail_after=int(calls * 0.7), error=error), output=out,
                       progress=False, overrides=OVERRIDES, **SETTINGS)
    done = RunStore.open(out / "store.zarr").done()
    assert 0 < done.sum() < TOTAL and not done[1].all()
    if error is Crash:  # everything handed to the writer was committed
        assert done[0].all() and done[1].any()  # chain 1 stopped after a checkpoint
    done_before = int(done.sum())
    assert not lk.open_run(out).info()["reduced"]

    run = lk.loss_kernel(tiny_task(), output=out, progress=False, overrides=OVERRIDES,
                         **SETTINGS)
    assert run.sample_report.draws_written == TOTAL - done_before < TOTAL
    assert_bitwise_equal(store_arrays(out, ("losses", "done", "kernel/cov")),
                         store_arrays(whole, ("losses", "done", "kernel/cov")))


def test_loss_kernel_refuses_another_model_under_the_same_output(in_memory):
    out, _ = in_memory
    task = tiny_task()
    with torch.no_grad():
        task.model[0].bias.add_(0.1)
    with pytest.raises(RunDirError, match="different model"):
        lk.loss_kernel(task, output=out, progress=False, overrides=OVERRIDES, **SETTINGS)


def test_loss_kernel_settings_are_checked(tmp_path):
    task = tiny_task()
    with pytest.raises(ConfigError, match="no_such_setting"):
        lk.loss_kernel(task, output=tmp_path / "x", no_such_setting=1)
    with pytest.raises(ConfigError, match="sampler.chainz"):
        lk.loss_kernel(task, output=tmp_path / "x", overrides={"sampler.chainz": 2})
    with pytest.raises(ConfigError, match="task.target"):
        lk.loss_kernel(task, output=tmp_path / "x", overrides={"task.target": "a.b:c"})
    with pytest.raises(ConfigError, match="must be a losskernel_dist.Task"):
        lk.loss_kernel(object(), output=tmp_path / "x")  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_in_memory_run_is_refused_by_submit_and_the_command_line(in_memory, capsys):
    out, _ = in_memory
    from losskernel_dist.jobs.submit import prepare

    before = store_arrays(out, ("losses", "done"))
    config = lk.open_run(out).config
    with pytest.raises(SubmitError, match="in memory"):
        prepare(config)
    assert main(["submit", str(out / "config.yaml")]) == 2
    assert "in memory" in one_error_line(capsys.readouterr().err)
    assert not (out / "slurm").exists()

    assert main(["sample", str(out / "config.yaml"), "--no-progress"]) == 2
    assert "in-memory Task" in one_error_line(capsys.readouterr().err)
    with pytest.raises(TaskError, match="in-memory Task"):
        lk.sample(config, progress=False)
    assert_bitwise_equal(store_arrays(out, ("losses", "done")), before)


# ---------------------------------------------------------------------- package and CLI


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})


def test_import_and_reading_a_run_do_not_import_torch(analysed):
    code = (
        "import sys, losskernel_dist as lk\n"
        "assert 'torch' not in sys.modules, 'import'\n"
        f"run = lk.open_run({str(analysed)!r})\n"
        "k = run.kernel('corr').values; l = run.losses().values; m = run.metrics\n"
        "assert k.shape == (30, 30) and l.shape == (2, 20, 30) and m['summary']\n"
        "assert 'torch' not in sys.modules, 'reading'\n"
        "print('ok')\n"
    )
    result = _python(code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_all_names_resolve():
    assert len(set(lk.__all__)) == len(lk.__all__)
    for name in lk.__all__:
        assert getattr(lk, name) is not None, name
        assert name in dir(lk)
    assert issubclass(lk.ConfigError, lk.LosskernelError)
    assert issubclass(lk.TaskError, lk.LosskernelError)
    from losskernel_dist import api, task

    assert lk.Task is task.Task and lk.run is api.run and lk.Run is api.Run
    with pytest.raises(AttributeError):
        lk.no_such_name  # noqa: B018


def test_load_config_takes_overrides_as_a_dict_or_as_set_strings(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", linear_data(tmp_path / "c"))
    a = lk.load_config(path, overrides={"sampler.lr": 1e-5, "reduce.dtype": "float64"})
    b = lk.load_config(path, overrides=["sampler.lr=1e-5", "reduce.dtype=float64"])
    assert a == b and a.sampler.lr == 1e-5 and a.reduce.dtype == "float64"
    assert lk.load_config(linear_data(tmp_path / "c")) == lk.load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        lk.load_config(tmp_path / "missing.yaml")


def test_cli_user_error_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LOSSKERNEL_DEBUG", raising=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampler: [unclosed\n  lr: {\n")
    with pytest.raises(ConfigError) as err:
        lk.load_config(bad)
    assert "\n" in str(err.value)  # YAML's own message spans lines: the CLI keeps the first
    assert main(["run", str(bad)]) == 2
    assert "is not valid YAML" in one_error_line(capsys.readouterr().err)
    assert main(["reduce", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in one_error_line(capsys.readouterr().err)
    monkeypatch.setenv("LOSSKERNEL_DEBUG", "0")
    assert main(["reduce", str(tmp_path / "nowhere")]) == 2


def test_cli_debug_reraises_user_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("LOSSKERNEL_DEBUG", raising=False)
    with pytest.raises(RunDirError, match="not a run directory"):
        main(["--debug", "reduce", str(tmp_path / "nowhere")])
    monkeypatch.setenv("LOSSKERNEL_DEBUG", "1")
    with pytest.raises(RunDirError, match="not a run directory"):
        main(["reduce", str(tmp_path / "nowhere")])
    # as a process: the traceback is printed and the exit status is Python's (1), not 2
    result = _python("from losskernel_dist.cli import main; import sys; "
                     f"sys.exit(main(['reduce', {str(tmp_path / 'nowhere')!r}]))",
                     LOSSKERNEL_DEBUG="1")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RunDirError" in result.stderr
