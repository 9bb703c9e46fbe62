"""One prepared run on a lent GPU machine: install the carried wheels, run the measurements
of issue 16 under their time budgets, and leave one JSON record and its log in ``--out``.

    bash bench/device/run.sh --commit SHA                    # on the GPU machine, into $OUT
    python3 bench/device/run.py --dry-run --out /tmp/dev     # here: the same steps, toy sizes
    python3 bench/device/run.py --steps modular_full --budget 240 --commit SHA   # a second call

The GPU machine has python3 with torch (CUDA), torchvision, numpy, scipy, scikit-learn,
numba, matplotlib, xarray, pandas and pytest, and no network; what the package needs
beyond that (bench/device/wheels.txt: zarr, numcodecs, google-crc32c, dask, umap-learn,
arviz, plotly, submitit, ...) travels as cp312 manylinux wheels in bench/device/wheels/
(git-ignored; bench/device/fetch_wheels.sh downloads them here). They are installed
with pip ``--no-index --target`` into a temporary site directory put first on
PYTHONPATH, with the repository itself (no ``pip install -e``). ``--dry-run`` skips the
install when every module already imports.

Each step (bench/device/steps.py) runs in its own process group with its own budget,
cut to what is left of ``--budget`` (default 470 s, inside the tool's 600 s limit);
a step over its budget is killed and recorded as ``timeout``, and the run goes on. After
every step the record is rewritten, so a run killed from outside still leaves what it
measured. Files written to ``--out`` (at most 8 come back from the machine):
``device_run.json`` (command, git commit, machine, versions, config, per-step status,
seconds and results), ``device_run.log`` (every step's output, headed by its name) and,
when it ran, ``modular_full_metrics.json`` (its analysis).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from steps import REPO, Step, steps  # noqa: E402

WHEELS = REPO / "bench" / "device" / "wheels"
IMPORT_NAMES = {"google-crc32c": "google_crc32c", "umap-learn": "umap",
                "xarray-einstats": "xarray_einstats"}
VERSIONED = ("torch", "torchvision", "numpy", "scipy", "numba", "zarr", "numcodecs", "dask",
             "umap-learn", "arviz", "plotly", "xarray", "pytest")


def carried_modules() -> list[str]:
    """The import names of the packages listed in wheels.txt."""
    names = []
    for line in (REPO / "bench" / "device" / "wheels.txt").read_text().splitlines():
        spec = line.split("#")[0].strip()
        if spec:
            name = re.split(r"[=<>!~ ]", spec)[0]
            names.append(IMPORT_NAMES.get(name, name.replace("-", "_")))
    return names


PROBE = """
import importlib, importlib.metadata as meta, json, sys
modules, names = sys.argv[1].split(","), sys.argv[2].split(",")
out = {"imports": {}, "versions": {}}
for m in modules:
    try:
        importlib.import_module(m)
        out["imports"][m] = "ok"
    except Exception as e:
        out["imports"][m] = f"{type(e).__name__}: {e}"[:300]
for n in names:
    try:
        out["versions"][n] = meta.version(n)
    except meta.PackageNotFoundError:
        out["versions"][n] = None
try:
    import torch
    c = torch.cuda.is_available()
    out["torch"] = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": c,
                    "device": torch.cuda.get_device_name() if c else None,
                    "devices": torch.cuda.device_count()}
except Exception as e:
    out["torch"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def probe(modules: list[str], env: dict[str, str]) -> dict:
    """In one fresh interpreter under ``env``: whether each module imports ('ok' or its
    error), the versions of VERSIONED, and torch's view of the GPU."""
    done = subprocess.run([sys.executable, "-c", PROBE, ",".join(modules), ",".join(VERSIONED)],
                          env=env, capture_output=True, text=True, timeout=180)
    if done.returncode:
        return {"imports": {m: f"probe failed: {done.stderr[-300:]}" for m in modules},
                "versions": {}, "torch": None}
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare(env: dict[str, str], modules: list[str], site: Path, dry_run: bool, log) -> dict:
    """Make the carried packages importable (``modules``: theirs and the steps' needs);
    what imported before, what was installed, and the probe after."""
    before = probe(modules, env)
    carried = carried_modules()
    record: dict = {"before": before["imports"], "installed": [], "probe": before}
    if dry_run and all(before["imports"].get(m) == "ok" for m in carried):
        record["skipped"] = "dry run: every carried module already imports"
        return record
    wheels = sorted(str(p) for p in WHEELS.glob("*.whl"))
    record["installed"] = [Path(w).name for w in wheels]
    if wheels:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
               "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site), *wheels]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        log.write(f"== install ({time.perf_counter() - t0:.1f} s, rc {done.returncode})\n"
                  f"{done.stdout}{done.stderr}\n")
        record["install_seconds"] = round(time.perf_counter() - t0, 1)
        record["install_rc"] = done.returncode
    else:
        record["install_rc"] = None
        log.write(f"== install: no wheels in {WHEELS} (bench/device/fetch_wheels.sh)\n")
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    record["probe"] = probe(modules, env)
    return record


def machine(torch_view: dict | str | None) -> dict:
    """GPU (nvidia-smi and torch), CPUs, memory and load average."""
    out: dict = {"host": platform.node(), "cores": os.cpu_count(),
                 "load_average": os.getloadavg(), "python": platform.python_version(),
                 "torch": torch_view}
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
        out["memory_gib"] = round(kib / 2**20, 1)
    except OSError:
        pass
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        out["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    return out


def git_commit(given: str | None) -> dict:
    """The commit the tree came from: ``--commit`` (the device copy may have no .git), or git."""
    if given:
        return {"commit": given, "source": "--commit"}
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    return {"commit": sha or "unknown", "source": "git" if sha else "none",
            "dirty": bool(dirty.strip())}


def pytest_counts(text: str) -> dict[str, int]:
    """'3 passed, 1 failed, 2 skipped' (pytest's summary) as numbers."""
    return {word: int(n) for n, word in re.findall(
        r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", text)}


def run_step(step: Step, budget: float, env: dict[str, str], log) -> dict:
    """Run one step under ``budget`` seconds: status ok / failed / timeout, seconds, output tail."""
    step_env = dict(env)
    for key, value in step.env.items():
        step_env[key] = os.pathsep.join([value, step_env.get(key, "")]).rstrip(os.pathsep)
    log.write(f"\n== {step.name} (budget {budget:.0f} s)\n$ {' '.join(step.command)}\n")
    log.flush()
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as buf:
        proc = subprocess.Popen(step.command, cwd=REPO, env=step_env, stdout=buf,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            rc = proc.wait(timeout=budget)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            status = "timeout"
        buf.seek(0)
        text = buf.read()
    seconds = time.perf_counter() - t0
    log.write(text + f"\n== {step.name}: {status} (rc {rc}) in {seconds:.1f} s\n")
    log.flush()
    entry = {"name": step.name, "status": status, "returncode": rc,
             "seconds": round(seconds, 1), "budget": round(budget, 1),
             "tail": text[-1500:]}
    if step.result is not None and step.result.exists():
        entry["result"] = json.loads(step.result.read_text())
    elif step.name == "gpu_tests":
        entry["result"] = pytest_counts(text[-2000:])
    return entry


def run_progress(run: Path, env: dict[str, str]) -> dict | str:
    """``losskernel info --json`` of a run cut short: how far it got (its draws/s follow)."""
    try:
        done = subprocess.run([sys.executable, "-m", "losskernel_dist.cli", "info", str(run),
                               "--json"], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        return "info timed out"
    if done.returncode:
        return done.stderr[-500:]
    info = json.loads(done.stdout)
    return {key: info[key] for key in info if key != "per_chain"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "device-out",
                    help="where the record and log go (default $OUT)")
    ap.add_argument("--dry-run", action="store_true", help="this CPU, toy sizes")
    ap.add_argument("--budget", type=float, default=470, help="seconds for the whole run")
    ap.add_argument("--steps", default="", help="comma-separated step names (default: all)")
    ap.add_argument("--commit", default=None, help="git commit of the tree (no .git there)")
    ap.add_argument("--device", default=None, help="default: cuda, or cpu with --dry-run")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    deadline = start + args.budget
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = args.device or ("cpu" if args.dry_run else "cuda")
    tmp = Path(tempfile.mkdtemp(prefix="device_run_"))
    # the test suite's own controls (tests/marker_groups.py) must not reach the steps'
    # pytest runs: a suite that requires the slurm group would fail `pytest -m gpu`
    suite_controls = ("LOSSKERNEL_REQUIRE_GROUPS", "LOSSKERNEL_GROUPS_FILE")
    env = {**{k: v for k, v in os.environ.items() if k not in suite_controls},
           "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    table = steps(tmp, device, args.dry_run)
    chosen = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(chosen) - {s.name for s in table})
    if unknown:
        ap.error(f"unknown steps {unknown}: choose from {[s.name for s in table]}")
    record: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "git": git_commit(args.commit),
                    "config": {"dry_run": args.dry_run, "device": device,
                               "budget_s": args.budget, "steps": chosen or "all",
                               "budgets": {s.name: s.budget for s in table}},
                    "steps": [], "results": {}}
    path = out / "device_run.json"

    def save() -> None:
        record["seconds"] = round(time.perf_counter() - start, 1)
        path.write_text(json.dumps(record, indent=1, default=str) + "\n")

    with open(out / "device_run.log", "w") as log:
        needs = sorted({m for s in table for m in s.needs} | set(carried_modules()))
        packages = prepare(env, needs, tmp / "site", args.dry_run, log)
        found = packages.pop("probe")
        record["packages"] = {**packages, "after": found["imports"]}
        record["machine"] = machine(found["torch"])
        record["versions"] = found["versions"]
        save()
        ok = {m for m, v in found["imports"].items() if v == "ok"}
        for step in table:
            if chosen and step.name not in chosen:
                continue
            left = deadline - time.perf_counter()
            reason = None
            if left < step.min_budget:
                reason = f"{left:.0f} s left, under its minimum of {step.min_budget:.0f} s"
            elif missing := [m for m in step.needs if m not in ok]:
                reason = f"cannot import {', '.join(missing)}"
            elif step.skip is not None:
                reason = step.skip(record["results"], min(step.budget, left))
            if reason:
                entry = {"name": step.name, "status": "skipped", "reason": reason}
                log.write(f"\n== {step.name}: skipped ({reason})\n")
            else:
                entry = run_step(step, min(step.budget, left), env, log)
            if step.name == "modular_full" and entry["status"] in ("timeout", "failed"):
                entry["progress"] = run_progress(tmp / "modular_full", env)
            record["steps"].append(entry)
            if "result" in entry:
                record["results"][step.name] = entry["result"]
            save()
        metrics = tmp / "modular_full" / "analysis" / "metrics.json"
        if metrics.exists():
            shutil.copy(metrics, out / "modular_full_metrics.json")
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    save()
    shutil.rmtree(tmp, ignore_errors=True)
    bad = [s["name"] for s in record["steps"] if s["status"] in ("failed", "timeout")]
    print(json.dumps({"record": str(path), "seconds": record["seconds"],
                      "steps": {s["name"]: s["status"] for s in record["steps"]}}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
