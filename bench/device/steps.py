"""The measurements of issue 16 on a lent GPU, in order, each with its own time budget.

``steps(...)`` gives the table ``run.py`` runs: the command of each step on the GPU, or at
toy sizes on this CPU (``dry_run``: the same scripts and code paths, so that the script is
known to work before it meets a GPU), its budget in seconds, the JSON it writes, the
modules it needs (a step whose modules do not import is skipped, saying which), and a
rule that may skip it given the results so far. The budgets add up to the default
deadline of run.py (about 8 minutes with the install); the order is the issue's: the
GPU tests and CUDA resume, bench/gpu.py, the reduce on the device; the paper-size
modular run last, when enough time is left (a second, shorter call can run it alone:
``--steps modular_full``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
ONE_MILLION = 1_000_000


@dataclass
class Step:
    """One measurement: a command run in its own process group under ``budget`` seconds."""

    name: str
    budget: float
    command: list[str]
    result: Path | None = None  # the JSON file the step writes, read into the record
    needs: tuple[str, ...] = ()  # modules that must import, else the step is skipped
    # a reason to skip, from the results so far and the seconds the step would have
    skip: Callable[[dict, float], str | None] | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to the step's environment
    min_budget: float = 10.0  # skipped when less than this is left


def gpu_test_files() -> list[str]:
    """The test files holding ``gpu`` tests (collecting only them is seconds, not minutes)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                  if "mark.gpu" in p.read_text(encoding="utf-8"))


def projected_1e6(results: dict, budget: float) -> str | None:
    """Skip the N = 1,000,000 neighbours run unless the large run's rate says it fits."""
    rows = (results.get("neighbours_large") or {}).get("rows") or []
    if not rows:
        return "no rate from neighbours_large to project from"
    seconds = rows[0]["projected_seconds_1e6"]
    if seconds > 0.8 * budget:
        return f"projected {seconds:.0f} s at N = 1,000,000, over 80% of its {budget:.0f} s"
    return None


def steps(tmp: Path, device: str, dry_run: bool) -> list[Step]:
    """The table, in the order it runs."""
    t = {"gpu_tests": 75, "resume": 90, "gpu_bench": 90, "neighbours_vs_dask": 60,
         "neighbours_large": 30, "reduce_dense": 100, "neighbours_1e6": 75,
         "modular_full": 240}
    tiny = dry_run
    engines = [PY, str(REPO / "bench" / "engines.py"), "--device", device]
    result = {name: tmp / f"{name}.json" for name in t}
    gpu_bench = [PY, str(REPO / "bench" / "gpu.py"), "--json", str(result["gpu_bench"])]
    if tiny:
        gpu_bench += ["--device", "cpu", "--n-eval", "6", "--n-train", "8", "--image-size",
                      "64", "--batch-size", "2", "--eval-batch", "3", "--draws", "2",
                      "--floor-passes", "1"]
    modular = [PY, "-m", "losskernel_dist.cli", "run", str(REPO / "configs" / "modular_full.yaml"),
               "--no-progress", "--set", f"output={tmp / 'modular_full'}",
               "--set", f"sampler.device={device}"]
    modular += (["--set", "task.args.n_eval=32", "--set", "sampler.chains=2",
                 "--set", "sampler.draws=3", "--set", "sampler.burnin_steps=1",
                 "--set", "sampler.batch_size=16", "--set", "eval.batch_size=32",
                 "--set", "sampler.chains_per_batch=2", "--set", "analysis.enabled=false"]
                if tiny else ["--set", "sampler.chains_per_batch=30"])
    table = [
        Step("gpu_tests", t["gpu_tests"],
             [PY, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
              *gpu_test_files()], needs=("pytest",)),
        Step("resume", t["resume"],
             [PY, str(REPO / "bench" / "device" / "resume.py"), "--device", device,
              "--json", str(result["resume"]), *(["--dry-run"] if tiny else [])],
             result=result["resume"]),
        Step("gpu_bench", t["gpu_bench"], gpu_bench, result=result["gpu_bench"],
             needs=("torchvision",), env={"PYTHONPATH": str(REPO / "bench")}),
        Step("neighbours_vs_dask", t["neighbours_vs_dask"],
             engines + ["--kind", "neighbours", "--engines", "torch,dask",
                        "--n", "400" if tiny else "50000", "--m", "64",
                        "--block", "128" if tiny else "2048",
                        "--json", str(result["neighbours_vs_dask"])],
             result=result["neighbours_vs_dask"]),
        Step("neighbours_large", t["neighbours_large"],
             engines + ["--kind", "neighbours", "--engines", "torch",
                        "--n", "600" if tiny else "200000", "--m", "64",
                        "--block", "128" if tiny else "2048",
                        "--json", str(result["neighbours_large"])],
             result=result["neighbours_large"],
             skip=(lambda results, budget: "dry run: the code of neighbours_vs_dask")
             if tiny else None),
        Step("reduce_dense", t["reduce_dense"],
             engines + ["--kind", "dense", "--engines", "torch,dask",
                        "--n", "300" if tiny else "50000", "--m", "200",
                        "--block", "128" if tiny else "2048", "--dir", str(tmp),
                        "--json", str(result["reduce_dense"])],
             result=result["reduce_dense"]),
        Step("neighbours_1e6", t["neighbours_1e6"],
             engines + ["--kind", "neighbours", "--engines", "torch",
                        "--n", "1000" if tiny else str(ONE_MILLION), "--m", "64",
                        "--block", "128" if tiny else "2048",
                        "--json", str(result["neighbours_1e6"])],
             result=result["neighbours_1e6"],
             skip=projected_1e6),
        Step("modular_full", t["modular_full"], modular, needs=("umap", "arviz"),
             min_budget=30 if tiny else 120),
    ]
    return table
