"""bench/device/run.sh works before it meets a GPU: its dry run here runs every step at toy
sizes, and its parts (budgets, skips, the wheel install) do what the GPU run relies on."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench" / "device"))

import run as device_run  # noqa: E402
from steps import Step, projected_1e6, steps  # noqa: E402

BUDGET = 420  # the dry run's own deadline: generous, for a loaded 2-core machine


@pytest.mark.slow
def test_dry_run_runs_every_step_and_writes_one_record(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "VIRTUAL_ENV": ""}
    t0 = time.perf_counter()
    done = subprocess.run(["bash", str(REPO / "bench" / "device" / "run.sh"), "--dry-run",
                           "--out", str(out), "--budget", str(BUDGET), "--commit", "abc123"],
                          env=env, capture_output=True, text=True, timeout=BUDGET + 120)
    wall = time.perf_counter() - t0
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((out / "device_run.json").read_text())
    log = (out / "device_run.log").read_text()
    status = {s["name"]: s for s in record["steps"]}
    assert list(status) == [s.name for s in steps(tmp_path, "cpu", True)]
    assert record["git"] == {"commit": "abc123", "source": "--commit"}
    assert record["config"]["dry_run"] is True and record["machine"]["cores"] >= 1
    assert record["versions"]["zarr"] and record["machine"]["torch"]["torch"]
    assert record["packages"]["skipped"].startswith("dry run")
    assert record["seconds"] <= wall and record["seconds"] < BUDGET
    for name, step in status.items():
        assert step["status"] in ("ok", "skipped"), (name, step)
        assert f"== {name}" in log

    assert status["gpu_tests"]["result"]["skipped"] >= 1  # no CUDA here: the gpu tests skip
    resume = status["resume"]["result"]["rows"][0]
    assert resume["deterministic"] and resume["bitwise_equal"] and resume["draws_per_s"] > 0
    assert 0 < resume["draws_done_at_kill"] < resume["draws"]
    agreement = status["neighbours_vs_dask"]["result"]["agreement"]
    assert agreement["top_index_equal"] == 1.0 and agreement["bottom_index_equal"] == 1.0
    assert agreement["top_max_value_difference"] < 1e-12
    engines = [row["engine"] for row in status["neighbours_vs_dask"]["result"]["rows"]]
    assert engines == ["torch:cpu", "dask"]
    dense = status["reduce_dense"]["result"]
    assert dense["agreement"]["max_abs_corr_difference"] < 1e-5  # float32 kernels
    assert status["neighbours_1e6"]["status"] == "skipped"
    assert status["modular_full"]["status"] == "ok"
    if status["gpu_bench"]["status"] == "skipped":
        assert "torchvision" in status["gpu_bench"]["reason"]


def test_a_step_over_its_budget_is_killed_with_its_children_and_the_run_goes_on(tmp_path):
    marker = tmp_path / "grandchild_ran"
    slow = Step("slow", 1, ["bash", "-c", f"(sleep 3; touch {marker}) & sleep 30"])
    log = io.StringIO()
    t0 = time.perf_counter()
    entry = device_run.run_step(slow, 1.0, dict(os.environ), log)
    assert entry["status"] == "timeout" and time.perf_counter() - t0 < 10
    time.sleep(3.5)
    assert not marker.exists(), "the step's background child outlived the kill"
    failing = device_run.run_step(Step("bad", 5, ["bash", "-c", "echo oops; exit 3"]), 5.0,
                                  dict(os.environ), log)
    assert failing["status"] == "failed" and failing["returncode"] == 3
    assert "oops" in failing["tail"] and "== bad: failed (rc 3)" in log.getvalue()


def test_the_million_sample_run_is_skipped_unless_its_projection_fits():
    def rows(seconds: float) -> dict:
        return {"neighbours_large": {"rows": [{"projected_seconds_1e6": seconds}]}}

    assert projected_1e6(rows(50), 75) is None
    assert "projected 70 s" in projected_1e6(rows(70), 75)
    assert "no rate" in projected_1e6({}, 75)


def test_the_pytest_summary_is_counted():
    counts = device_run.pytest_counts("== 3 passed, 1 failed, 2 skipped, 4 deselected in 9s ==")
    assert counts == {"passed": 3, "failed": 1, "skipped": 2, "deselected": 4}


def _wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel holding module ``name``."""
    path = folder / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.py", "VALUE = 42\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                    "Tag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def test_carried_wheels_are_installed_into_a_site_directory_without_the_network(
        tmp_path, monkeypatch):
    """The GPU run's install path (the dry run here skips it): pip --no-index --target."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "lkdevicedummy")
    monkeypatch.setattr(device_run, "WHEELS", wheels)
    monkeypatch.setattr(device_run, "carried_modules", lambda: ["lkdevicedummy"])
    env = {**os.environ, "PYTHONPATH": str(REPO), "PIP_NO_INDEX": "1"}
    log = io.StringIO()
    record = device_run.prepare(env, ["lkdevicedummy", "json"], tmp_path / "site", True, log)
    assert record["before"]["lkdevicedummy"].startswith("ModuleNotFoundError")
    assert record["install_rc"] == 0, log.getvalue()
    assert record["installed"] == ["lkdevicedummy-0.1-py3-none-any.whl"]
    assert record["probe"]["imports"] == {"lkdevicedummy": "ok", "json": "ok"}
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "site")
    assert (tmp_path / "site" / "lkdevicedummy.py").exists()


def test_every_carried_package_is_pinned_and_imports_here():
    """wheels.txt pins each package (one version: two stop pip's install), and each of its
    modules imports in this venv, where the package's tests run against the same versions."""
    lines = [line.split("#")[0].strip()
             for line in (REPO / "bench" / "device" / "wheels.txt").read_text().splitlines()]
    specs = [line for line in lines if line]
    assert specs and all("==" in spec for spec in specs)
    names = [spec.split("==")[0] for spec in specs]
    assert len(set(names)) == len(names)
    import importlib

    for module in device_run.carried_modules():
        importlib.import_module(module)
