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
VERSIONED = ("numpy", "dask", "distributed", "dask-jobqueue", "zarr", "torch")


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


class BenchRecord:
    """Started before a benchmark (load before), written after it (load after)."""

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.config = config
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
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
        path.write_text(json.dumps(record, indent=1, default=str) + "\n")
        return path
