"""Every user error is one line on stderr and exit status 2, never a traceback.

A table of bad inputs (configs, overrides, tasks, run directories, devices),
each run through ``losskernel_dist.cli.main`` in this process; the cases
whose effect is on the process (a reader closing the pipe, a full or
read-only file system) run ``losskernel`` in a subprocess. Every case checks
the exit status, at most three lines on stderr, the word "error", no
traceback, and the words that say what is wrong (the key, the path, the
shape), so that a case cannot pass by failing for another reason.

The test tasks below are imported by name (``tests.faults.test_user_errors:...``)
as a user's task would be.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import pathlib
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from losskernel_dist.cli import EXIT_BROKEN_PIPE, EXIT_USAGE, main
from losskernel_dist.errors import LosskernelError
from losskernel_dist.locks import ChainLocks
from losskernel_dist.task import Task
from losskernel_dist.tasks import linear

from ..dist_helpers import (
    losskernel_cmd,
    poisoned_config,
    run_config,
    subprocess_env,
    write_yaml,
)

HERE = "tests.faults.test_user_errors"
NOT_RUN = ("is not a run directory",)


# ------------------------------------------------------------------ tasks that go wrong


def returns_dict(**_: Any) -> dict:
    return {"model": None}


def needs_path(path: str) -> Task:
    return linear.build(n=64, n_eval=8)


def _with_loss(loss: Callable[[torch.Tensor], Any], **args: Any) -> Task:
    task = linear.build(n=64, n_eval=8, **args)
    inner = task.loss
    return dataclasses.replace(task, loss=lambda model, batch: loss(inner(model, batch)))


def loss_2d(**args: Any) -> Task:
    return _with_loss(lambda out: torch.stack([out, out], dim=1), **args)


def loss_scalar(**args: Any) -> Task:
    return _with_loss(lambda out: out.mean(), **args)


def loss_int64(**args: Any) -> Task:
    return _with_loss(lambda out: out.round().long(), **args)


def loss_float(**args: Any) -> Task:
    return _with_loss(lambda out: float(out.sum()), **args)


def loss_one_per_batch(**args: Any) -> Task:
    return _with_loss(lambda out: out.mean().reshape(1), **args)


def nan_eval_sample(index: int = 3) -> Task:
    """A task whose eval sample ``index`` has a NaN target: its loss is NaN at w*."""
    task = linear.build(n=64, n_eval=8)
    e, z = task.eval.tensors
    z = z.clone()
    z[index] = float("nan")
    return dataclasses.replace(task, eval=torch.utils.data.TensorDataset(e, z))


def nan_train_sample(index: int = 5) -> Task:
    task = linear.build(n=64, n_eval=8)
    x, y = task.train.tensors
    y = y.clone()
    y[index] = float("nan")
    return dataclasses.replace(task, train=torch.utils.data.TensorDataset(x, y))


def bad_labels(**_: Any) -> Task:
    task = linear.build(n=64, n_eval=8)
    return dataclasses.replace(task, labels=[0, 1])


# ------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Case:
    """``argv(tmp)`` builds the command line in a fresh directory; ``expect`` are words
    the one stderr line must contain (case-insensitive), ``code`` the exit status."""

    name: str
    argv: Callable[[Path], list[str]]
    expect: tuple[str, ...]
    code: int = EXIT_USAGE
    needs: str = ""  # "no-cuda": skipped where CUDA is available
    reject: tuple[str, ...] = field(default=())  # words the line must not contain


def config_file(tmp: Path, data: dict | None = None, **sampler: Any) -> Path:
    return write_yaml(tmp / "config.yaml", data or run_config(tmp / "run", **sampler))


def sample(*overrides: str, data: Callable[[Path], dict] | None = None):
    """argv of 'losskernel sample' on the small linear config with ``--set`` overrides."""
    def argv(tmp: Path) -> list[str]:
        path = config_file(tmp, data(tmp) if data else None)
        return ["sample", str(path), "--no-progress",
                *[arg for o in overrides for arg in ("--set", o)]]
    return argv


def with_task(target: str, args: dict | None = None) -> Callable[[Path], dict]:
    def data(tmp: Path) -> dict:
        d = run_config(tmp / "run", target=target)
        d["task"]["args"] = args or {}
        return d
    return data


def modular(**args: Any) -> Callable[[Path], dict]:
    return with_task("losskernel_dist.tasks.modular:build", args)


def garbage_file(tmp: Path) -> Path:
    path = tmp / "garbage.pt"
    path.write_bytes(os.urandom(4096))
    return path


def garbage_checkpoint(module: str) -> Callable[[Path], dict]:
    def data(tmp: Path) -> dict:
        return with_task(f"losskernel_dist.tasks.{module}:build",
                         {"checkpoint": str(garbage_file(tmp)), "n_eval": 8})(tmp)
    return data


def raw_config(text: str):
    def argv(tmp: Path) -> list[str]:
        path = tmp / "config.yaml"
        path.write_text(text)
        return ["sample", str(path), "--no-progress"]
    return argv


def without(section: str):
    def data(tmp: Path) -> dict:
        d = run_config(tmp / "run")
        del d[section]
        return d
    return data


def output_is_file(tmp: Path) -> dict:
    (tmp / "afile").write_text("not a directory")
    return run_config(tmp / "afile")


def output_under_file(tmp: Path) -> dict:
    (tmp / "afile").write_text("not a directory")
    return run_config(tmp / "afile" / "run")


def output_not_a_run(tmp: Path) -> dict:
    (tmp / "run").mkdir()
    (tmp / "run" / "notes.txt").write_text("mine")
    return run_config(tmp / "run")


def on_dir(command: str, *extra: str, make: Callable[[Path], Path] | None = None):
    """argv of ``command DIR`` on a directory that holds no run (or what ``make`` makes)."""
    def argv(tmp: Path) -> list[str]:
        if make is not None:
            target = make(tmp)
        else:
            target = tmp / "plain"
            target.mkdir()
            (target / "data.csv").write_text("1,2\n")
        return [command, str(target), *extra]
    return argv


def missing_dir(tmp: Path) -> Path:
    return tmp / "nowhere"


def config_only(tmp: Path) -> Path:
    """A directory with a run's config.yaml and no store: made, never sampled."""
    (tmp / "run").mkdir()
    write_yaml(tmp / "run" / "config.yaml", run_config(tmp / "run"))
    return tmp / "run"


def sampled(tmp: Path) -> Path:
    """A sampled, not reduced run (a copy of the module's run)."""
    shutil.copytree(SAMPLED_RUN["path"], tmp / "run")
    return tmp / "run"


def all_chains_failed(tmp: Path) -> Path:
    """A run whose chains all diverged (sampler.lr far too large): 'sample' exits 3."""
    path = config_file(tmp, run_config(tmp / "run", lr=1.0e3))
    assert main(["sample", str(path), "--no-progress"]) == 3
    return tmp / "run"


def one_chain_failed(tmp: Path) -> Path:
    """A run whose chain 1 of 3 diverged (it drew a NaN training target): exit 3."""
    data, _ = poisoned_config(tmp / "run", chains=3, victim=1)
    assert main(["sample", str(config_file(tmp, data)), "--no-progress"]) == 3
    return tmp / "run"


def sampled_for_cuda_reduce(tmp: Path) -> Path:
    """A sampled run whose config reduces with the torch engine on cuda:0."""
    data = run_config(tmp / "run")
    data["reduce"].update(engine="torch", device="cuda:0")
    assert main(["sample", str(config_file(tmp, data)), "--no-progress"]) == 0
    return tmp / "run"


def calibrate(*extra: str):
    def argv(tmp: Path) -> list[str]:
        return ["calibrate", str(config_file(tmp)), "--no-progress", *extra]
    return argv


def resumed_with(*overrides: str):
    """argv of a resume of the module's sampled run with changed draw keys."""
    def argv(tmp: Path) -> list[str]:
        run = sampled(tmp)
        data = run_config(run)
        path = config_file(tmp, data)
        return ["sample", str(path), "--no-progress",
                *[arg for o in overrides for arg in ("--set", o)]]
    return argv


CASES = [
    # ---- the config file itself
    Case("config file missing", lambda tmp: ["sample", str(tmp / "none.yaml")],
         ("none.yaml", "does not exist")),
    Case("config not YAML", raw_config("task: [unclosed\n"), ("not valid YAML",)),
    Case("config top level a list", raw_config("- 1\n- 2\n"), ("top level must be a mapping",)),
    Case("config empty", raw_config(""), ("task: missing",)),
    Case("unknown section", sample("smapler.lr=1"), ("smapler", "unknown key")),
    Case("unknown key", sample("sampler.lrr=1"), ("sampler.lrr", "unknown key")),
    Case("missing task section", sample(data=without("task")), ("task: missing",)),
    Case("task.target missing", sample("task={args: {}}"), ("task.target", "missing")),
    # ---- wrong types
    Case("int key given a word", sample("sampler.chains=four"), ("sampler.chains", "integer")),
    Case("int key given a float", sample("sampler.draws=2.5"), ("sampler.draws", "integer")),
    Case("int key given a bool", sample("sampler.batch_size=true"),
         ("sampler.batch_size", "integer")),
    Case("float key given a list", sample("sampler.lr=[1]"), ("sampler.lr", "number")),
    Case("bool key given a word", sample("sampler.noise=maybe"), ("sampler.noise", "true or false")),
    Case("section given a number", sample("sampler=3"), ("sampler", "mapping")),
    Case("task.args not a mapping", sample("task.args=[1, 2]"), ("task.args", "mapping")),
    # ---- values out of range, and the non-finite ones
    Case("zero chains", sample("sampler.chains=0"), ("sampler.chains", ">= 1")),
    Case("one draw", sample("sampler.draws=1"), ("sampler.draws", ">= 2")),
    Case("negative lr", sample("sampler.lr=-1e-3"), ("sampler.lr", "> 0")),
    Case("zero lr", sample("sampler.lr=0"), ("sampler.lr", "> 0")),
    Case("infinite lr", sample("sampler.lr=.inf"), ("sampler.lr", "finite")),
    Case("nan lr", sample("sampler.lr=.nan"), ("sampler.lr", "finite")),
    Case("minus infinite nbeta", sample("sampler.nbeta=-.inf"), ("sampler.nbeta", "finite")),
    Case("nan localization", sample("sampler.localization=.nan"),
         ("sampler.localization", "finite")),
    Case("infinite guard tolerance", sample("guards.max_loss_increase=.inf"),
         ("guards.max_loss_increase", "finite")),
    Case("infinite cache", sample("reduce.cache_gb=.inf"), ("reduce.cache_gb", "finite")),
    Case("infinite lr in the calibration grid", sample("calibrate.lr=[1e-3, .inf]"),
         ("calibrate.lr", "finite")),
    Case("negative seed", sample("sampler.seed=-1"), ("sampler.seed", ">= 0")),
    Case("empty output", sample("output=''"), ("output", "non-empty")),
    # ---- fixed choices
    Case("bad kernel kind", sample("reduce.kernel=sparse"), ("reduce.kernel", "dense")),
    Case("bad autocast", sample("eval.autocast=fp8"), ("eval.autocast", "bf16")),
    Case("bad device name", sample("sampler.device=tpu"), ("sampler.device", "cuda:K")),
    Case("bad device index", sample("sampler.device=cuda:x"), ("sampler.device", "cuda:K")),
    Case("bad guard action", sample("guards.action=stop"), ("guards.action", "warn or error")),
    # ---- --set itself
    Case("--set without =", sample("sampler.lr"), ("--set", "KEY=VALUE")),
    Case("--set bad YAML", sample("sampler.lr=[1"), ("sampler.lr", "not valid YAML")),
    Case("--set through a value", sample("sampler.lr.x=1"), ("lr", "not a section")),
    # ---- the task target and its arguments
    Case("target without ':'", sample("task.target=losskernel_dist.tasks.linear"),
         ("task.target", "module:function")),
    Case("target module missing", sample("task.target=no_such_module:build"),
         ("no_such_module", "cannot import")),
    Case("target function missing", sample("task.target=losskernel_dist.tasks.linear:nope"),
         ("nope",)),
    Case("target not callable", sample("task.target=losskernel_dist.tasks.linear:__name__"),
         ("not callable",)),
    Case("target returns a dict", sample(data=with_task(f"{HERE}:returns_dict")),
         ("returned dict", "Task")),
    Case("task.args unknown", sample("task.args.bogus=1"), ("task.args", "bogus")),
    Case("task.args missing", sample(data=with_task(f"{HERE}:needs_path")), ("path",)),
    Case("linear n negative", sample("task.args.n=-4"), ("task.args.n", ">= 1")),
    Case("linear dtype", sample("task.args.dtype=int8"), ("task.args.dtype", "float32")),
    Case("task labels of the wrong length", sample(data=with_task(f"{HERE}:bad_labels")),
         ("labels has shape",)),
    Case("modular n_eval 0", sample(data=modular(n_eval=0)), ("task.args.n_eval", "even")),
    Case("modular n_eval 1", sample(data=modular(n_eval=1)), ("task.args.n_eval", "even")),
    Case("modular n_eval 3", sample(data=modular(n_eval=3)), ("task.args.n_eval", "2 or 4")),
    Case("modular n_eval too large", sample(data=modular(n_eval=10**8)),
         ("task.args.n_eval", "pool has only")),
    Case("modular eval_from", sample(data=modular(n_eval=8, eval_from="test")),
         ("task.args.eval_from",)),
    Case("modular checkpoint missing", sample(data=modular(checkpoint="/nonexistent/m.pt")),
         ("/nonexistent/m.pt", "not found")),
    Case("modular checkpoint of random bytes", sample(data=garbage_checkpoint("modular")),
         ("garbage.pt", "losskernel train-modular")),
    Case("digits checkpoint of random bytes", sample(data=garbage_checkpoint("digits")),
         ("garbage.pt", "task.args.checkpoint")),
    # ---- the task's loss
    Case("loss of shape [B, 2]", sample(data=with_task(f"{HERE}:loss_2d")),
         ("shape (8, 2)", "one float per sample")),
    Case("loss a scalar tensor", sample(data=with_task(f"{HERE}:loss_scalar")),
         ("scalar", "one float per sample")),
    Case("loss of int64", sample(data=with_task(f"{HERE}:loss_int64")),
         ("int64", "one float per sample")),
    Case("loss a Python float", sample(data=with_task(f"{HERE}:loss_float")),
         ("float, not a tensor",)),
    Case("loss one value per batch", sample(data=with_task(f"{HERE}:loss_one_per_batch")),
         ("for 8 eval samples", "one float per sample")),
    Case("loss NaN at w* (eval)", sample(data=with_task(f"{HERE}:nan_eval_sample")),
         ("not finite at the trained weights", "eval sample 3"), reject=("sampler.lr",)),
    Case("loss NaN at w* (train)", sample(data=with_task(f"{HERE}:nan_train_sample")),
         ("not finite at the trained weights", "training sample 5"), reject=("sampler.lr",)),
    # ---- devices
    Case("device cuda without a GPU", sample("sampler.device=cuda"),
         ("sampler.device=cuda", "cpu or auto"), needs="no-cuda"),
    Case("device cuda:3 without a GPU", sample("sampler.device=cuda:3"),
         ("sampler.device=cuda:3",), needs="no-cuda"),
    Case("reduce on cuda without a GPU",
         on_dir("reduce", "--no-progress", make=sampled_for_cuda_reduce),
         ("reduce.device=cuda:0", "cpu or auto"), needs="no-cuda"),
    # ---- calibrate's own options
    Case("calibrate --lr not numbers", calibrate("--lr", "fast"), ("calibrate.lr", "number")),
    Case("calibrate --lr infinite", calibrate("--lr", "1e-3,.inf"), ("calibrate.lr", "finite")),
    Case("calibrate --shard out of range", calibrate("--shard", "3/2"), ("--shard", "0 <= I < K")),
    # ---- the output and run directories
    Case("output is a file", sample(data=output_is_file), ("afile", "is an existing file")),
    Case("output under a file", sample(data=output_under_file), ("afile", "which is a file")),
    Case("output a directory of other things", sample(data=output_not_a_run),
         ("is not empty", "choose another output")),
    Case("resume with another lr", resumed_with("sampler.lr=2e-3"),
         ("sampler.lr", "refusing to resume")),
    Case("info on a non-run directory", on_dir("info"), NOT_RUN),
    Case("info on a missing directory", on_dir("info", make=missing_dir), ("nowhere",) + NOT_RUN),
    Case("reduce on a non-run directory", on_dir("reduce", "--no-progress"), NOT_RUN),
    Case("analyze on a non-run directory", on_dir("analyze"), NOT_RUN),
    Case("verify on a non-run directory", on_dir("verify"), NOT_RUN),
    Case("compare of non-run directories", on_dir("compare", "/nonexistent/b"), ("plain",)),
    Case("reduce before sample", on_dir("reduce", "--no-progress", make=config_only),
         ("no store", "sample it first")),
    Case("analyze before reduce", on_dir("analyze", make=sampled), ("reduce",)),
    Case("reduce with a failed chain", on_dir("reduce", "--no-progress", make=one_chain_failed),
         ("failed chains [1]", "never re-run", "--allow-partial", "smaller sampler.lr"),
         reject=("finish it with",)),
    Case("reduce with every chain failed",
         on_dir("reduce", "--no-progress", make=all_chains_failed),
         ("failed chains [0, 1, 2, 3]", "new output with a smaller sampler.lr"),
         reject=("finish it with", "--allow-partial")),
    Case("reduce --allow-partial with every chain failed",
         on_dir("reduce", "--no-progress", "--allow-partial", make=all_chains_failed),
         ("only 0 usable draws", "smaller sampler.lr")),
]

SAMPLED_RUN: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def sampled_run(tmp_path_factory: pytest.TempPathFactory):
    """One small sampled run (not reduced) that the run-directory cases copy."""
    tmp = tmp_path_factory.mktemp("sampled")
    path = config_file(tmp)
    assert main(["sample", str(path), "--no-progress"]) == 0
    SAMPLED_RUN["path"] = tmp / "run"
    yield


def assert_one_error_line(err: str, expect: tuple[str, ...], reject: tuple[str, ...] = ()) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert 1 <= len(lines) <= 3, err
    line = next((x for x in lines if "error" in x), None)
    assert line is not None, err
    for word in expect:
        assert word.lower() in line.lower(), f"{word!r} not in {line!r}"
    for word in reject:
        assert word.lower() not in line.lower(), f"{word!r} in {line!r}"
    return line


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_user_error_is_one_line_and_exit_2(case: Case, tmp_path: Path, capsys,
                                             monkeypatch: pytest.MonkeyPatch):
    if case.needs == "no-cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here: the device is not a user error")
    monkeypatch.delenv("LOSSKERNEL_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    argv = case.argv(tmp_path)
    capsys.readouterr()  # what setting up printed
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == case.code, f"exit {code}\nstdout: {out}\nstderr: {err}"
    assert_one_error_line(err, case.expect, case.reject)


@pytest.mark.parametrize("target", ["loss_2d", "loss_int64", "nan_eval_sample",
                                    "nan_train_sample"])
def test_a_task_refused_at_w_star_leaves_no_run_behind(target: str, tmp_path: Path, capsys):
    """The losses at w* are checked before the output is touched, so that the fixed task
    is not then refused as 'a different model' by the empty run the first try left."""
    assert main(sample(data=with_task(f"{HERE}:{target}"))(tmp_path)) == EXIT_USAGE
    assert not (tmp_path / "run").exists()
    assert "error" in capsys.readouterr().err


def test_the_table_is_large_enough():
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


def test_debug_shows_the_traceback_of_a_user_error(tmp_path: Path):
    argv = sample("sampler.lr=.inf")(tmp_path)
    with pytest.raises(LosskernelError, match="finite"):
        main(["--debug", *argv])


# ------------------------------------------------------------------ process-level effects


def test_a_closed_pipe_ends_info_quietly():
    """'losskernel info RUN | head -1': the reader is gone before the first line is written."""
    proc = subprocess.Popen(losskernel_cmd("info", str(SAMPLED_RUN["path"])),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=subprocess_env())
    proc.stdout.close()  # before the interpreter has even started
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    proc.stderr.close()
    assert proc.returncode == EXIT_BROKEN_PIPE, err
    assert err == "", err


def test_a_closed_pipe_in_process_is_exit_141_without_output(capsys, monkeypatch):
    def broken(*_: Any, **__: Any) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr("losskernel_dist.jobs.info.format_info", broken)
    assert main(["info", str(SAMPLED_RUN["path"])]) == EXIT_BROKEN_PIPE
    assert capsys.readouterr().err == ""


def test_an_oserror_that_is_not_the_file_systems_is_a_bug(capsys, monkeypatch):
    def broken(*_: Any, **__: Any) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("losskernel_dist.jobs.info.format_info", broken)
    with pytest.raises(OSError, match="Input/output"):
        main(["info", str(SAMPLED_RUN["path"])])


@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, ("No space left on device", "free space or choose another output")),
    (errno.EROFS, ("Read-only file system", "writable")),
    (errno.EACCES, ("Permission denied", "permissions")),
])
def test_a_file_system_error_names_the_path(code, words, capsys, monkeypatch):
    def full(*_: Any, **__: Any) -> None:
        raise OSError(code, os.strerror(code))  # as a failed write: no file name

    monkeypatch.setattr("losskernel_dist.jobs.info.format_info", full)
    assert main(["info", str(SAMPLED_RUN["path"])]) == EXIT_USAGE
    line = assert_one_error_line(capsys.readouterr().err, words)
    assert line.startswith(f"losskernel: error: {SAMPLED_RUN['path']}: ")


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 300 KiB tmpfs at tmp_path/fs (root only); unmounted afterwards."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(losskernel_cmd(*args), env=subprocess_env(), capture_output=True,
                          text=True, timeout=300)


def test_no_space_while_writing_draws_is_one_line(small_fs: Path, tmp_path: Path):
    data = run_config(small_fs / "run", args={"n": 128, "n_eval": 20000, "dim": 6})
    proc = _run_cli("sample", str(write_yaml(tmp_path / "c.yaml", data)), "--no-progress")
    assert proc.returncode == EXIT_USAGE, proc.stderr
    line = assert_one_error_line(proc.stderr, ("No space left on device",
                                               "free space or choose another output"))
    assert str(small_fs / "run") in line


def test_no_space_while_creating_the_store_is_one_line(small_fs: Path, tmp_path: Path):
    fd = os.open(small_fs / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # fill the file system to the last block
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    data = run_config(small_fs / "run")
    proc = _run_cli("sample", str(write_yaml(tmp_path / "c.yaml", data)), "--no-progress")
    assert proc.returncode == EXIT_USAGE, proc.stderr
    line = assert_one_error_line(proc.stderr, ("No space left on device",
                                               "free space or choose another output"))
    assert str(small_fs) in line


def test_a_read_only_run_is_one_line(small_fs: Path, tmp_path: Path):
    config = write_yaml(tmp_path / "c.yaml", run_config(small_fs / "run"))
    assert _run_cli("sample", str(config), "--no-progress").returncode == 0
    remount = subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], capture_output=True,
                             text=True)
    if remount.returncode != 0:
        pytest.skip(f"cannot remount read-only: {remount.stderr.strip()}")
    proc = _run_cli("reduce", str(small_fs / "run"), "--no-progress")
    assert proc.returncode == EXIT_USAGE, proc.stderr
    line = assert_one_error_line(proc.stderr, ("Read-only file system", "writable"))
    assert str(small_fs) in line


# ------------------------------------------------------------------ cleanup never masks


def test_a_failed_lock_release_does_not_mask_the_error(tmp_path: Path, capsys,
                                                       monkeypatch: pytest.MonkeyPatch):
    locks = ChainLocks(tmp_path / "locks", [0, 1])
    real_unlink = pathlib.Path.unlink

    def read_only(self: pathlib.Path, missing_ok: bool = False) -> None:
        if self.suffix == ".lock":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(pathlib.Path, "unlink", read_only)
    with pytest.raises(RuntimeError, match="the real error"):
        with locks:
            raise RuntimeError("the real error")
    err = capsys.readouterr().err
    assert err.count("could not remove 2 locks") == 1 and "Read-only file system" in err
    assert locks.held == []


def test_a_failed_lock_release_in_a_run_leaves_the_real_error(tmp_path: Path, capsys,
                                                              monkeypatch):
    """The CLI reports the real error (a resume refused while the chains are locked: other
    numerics), not the cleanup's."""
    real_unlink = pathlib.Path.unlink

    def read_only(self: pathlib.Path, missing_ok: bool = False) -> None:
        if self.suffix == ".lock":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        real_unlink(self, missing_ok=missing_ok)

    argv = resumed_with("eval.batch_size=5")(tmp_path)
    monkeypatch.setattr(pathlib.Path, "unlink", read_only)
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert_one_error_line(err, ("eval.batch_size",))
    assert "could not remove 4 locks" in err
