"""A benchmark's JSON record in bench/results/: what ran, on what, under which load, and what
it measured, so that every number quoted in docs/performance.md can be traced to its run.

    record = BenchRecord("reduce_cluster", vars(args))   # load average read now
    ...                                                   # the benchmark
    path = record.write(result)                           # load average read again

The record holds the command line, the git commit (and whether the tree had
changes), the machine (CPU, cores, memory, the 1/5/15-minute load averages
before and after), the versions of Python and the libraries that set the
speed, the benchmark's configuration and its result.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _util import machine

RESULTS = Path(__file__).resolve().parent / "results"
VERSIONED = ("numpy", "dask", "distributed", "dask-jobqueue", "zarr", "torch",
             "transformers", "tokenizers", "datasets", "devinterp")
# A timed round whose foreign CPU (see LoadWatch) exceeds this many CPU seconds per second
# of wall time ran beside other work: its record flags it, and docs do not quote it as a ratio.
QUIET_FOREIGN_CPU_PER_S = 0.2


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=RESULTS.parent, capture_output=True, text=True)
    return out.stdout.strip()


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _memory_gib() -> float:
    with open("/proc/meminfo") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return round(kib / 2**20, 1)


def _machine_busy_cpu() -> float:
    """Busy CPU seconds of the whole machine so far (all /proc/stat time but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    """CPU seconds of this process and of its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadWatch:
    """The machine's load over one timed round: load averages and foreign CPU per second.

    The foreign CPU of a round is the busy CPU time of the whole machine (from
    /proc/stat) less that of this process and the children it waited for, per
    second of wall time. On 2 cores a round with foreign CPU near 0 ran alone;
    one above ``QUIET_FOREIGN_CPU_PER_S`` is flagged ``loaded``, since a ratio
    against a baseline slowed by other work is not a result.
    """

    def __init__(self) -> None:
        self.before = os.getloadavg()
        self.machine0, self.own0 = _machine_busy_cpu(), _own_cpu()
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        foreign = (_machine_busy_cpu() - self.machine0) - (_own_cpu() - self.own0)
        per_s = round(max(0.0, foreign) / wall, 3) if wall > 0 else None
        return {"loadavg_before": [round(x, 2) for x in self.before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                "foreign_cpu_per_s": per_s,
                "loaded": per_s is not None and per_s > QUIET_FOREIGN_CPU_PER_S}


class BenchRecord:
    """Started before a benchmark (load before), written after it (load after)."""

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.config = config
        # where write() puts the record: LOSSKERNEL_RECORDS_DIR redirects every bench's record
        # (scripts/reproduce.sh --quick sends them to bench/results/quick/, not committed)
        self.results_dir = Path(os.environ.get("LOSSKERNEL_RECORDS_DIR") or RESULTS)
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.load_before = os.getloadavg()
        self.commit = _git("rev-parse", "HEAD")  # the code that runs, not a later HEAD
        self.dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))

    def write(self, result: Any) -> Path:
        record = {
            "bench": self.name,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "started": self.started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "git_commit": self.commit,
            "git_dirty": self.dirty,
            "machine": {**machine(), "memory_gib": _memory_gib(),
                        "load_average_before": self.load_before,
                        "load_average_after": os.getloadavg()},
            "versions": _versions(),
            "config": self.config,
            "result": result,
        }
        self.results_dir.mkdir(parents=True, exist_ok=True)
        path = self.results_dir / f"{self.name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
        path.write_text(json.dumps(record, indent=1, default=str) + "\n")
        return path
