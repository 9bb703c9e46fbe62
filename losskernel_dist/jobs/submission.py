"""The record of a SLURM submission: where it lives, writing it, and reading it back with
the jobs' states.

``losskernel submit`` (submit.py) writes ``submission.json`` (job ids and each
array task's chains) into its submitit folder; ``losskernel info`` reads it and
asks ``sacct`` for the jobs' states. Reading lives apart from submitting so
that ``info`` imports neither submitit nor torch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..rundir import RunDir, atomic_write

SUBMISSION_NAME = "submission.json"


def write_submission(folder: Path, record: Mapping[str, Any]) -> Path:
    """Write a submission's record into submitit's ``folder``, atomically."""
    return atomic_write(Path(folder) / SUBMISSION_NAME, json.dumps(record, indent=2))


def submission_status(run_dir: Path) -> dict[str, Any] | None:
    """The latest submission of a run with its jobs' SLURM states (for ``losskernel info``).

    Looked for in the config's ``slurm.folder`` first, then in RUN_DIR/slurm.
    States come from ``sacct`` when it is available; otherwise they are None.
    """
    run = RunDir(run_dir)
    candidates = [run.slurm / SUBMISSION_NAME]
    try:
        folder = run.read_config_dict().get("slurm", {}).get("folder")
        if folder:
            candidates.insert(0, Path(folder) / SUBMISSION_NAME)
    except Exception:  # no or unreadable config: the run directory's own folder only
        pass
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return None
    record = json.loads(path.read_text())
    ids = [t["job_id"] for t in record.get("tasks", [])]
    if record.get("reduce_job_id"):
        ids.append(record["reduce_job_id"])
    states = sacct_states(ids) if record.get("cluster") == "slurm" else {}
    for t in record.get("tasks", []):
        t["state"] = states.get(t["job_id"])
    if record.get("reduce_job_id"):
        record["reduce_state"] = states.get(record["reduce_job_id"])
    return record


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM states of ``job_ids`` through sacct; {} when sacct is missing or fails."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(arrays)],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    states = {}
    for line in out.splitlines():
        job, _, state = line.partition("|")
        states[job.strip()] = state.split()[0] if state.strip() else ""
    return states
