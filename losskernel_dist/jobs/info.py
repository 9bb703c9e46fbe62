"""What ``losskernel info`` shows: config, draws done per chain, chain health, results so far.

A chain is ``done`` (every draw done), ``failed`` (diverged; the store says
why), ``running`` (a live process holds its lock: host and pid are shown),
``interrupted`` (some progress, nobody running it: resume with ``sample`` or
``submit``) or ``pending`` (not started). A lock whose holder is gone is
reported as stale. When the run was submitted to SLURM, its jobs and their
states (from sacct) are listed too.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint_meta import has_checkpoint, sidecar_step
from ..guards.judge import run_verdict
from ..locks import holders
from ..reduction.usable import KernelState, kernel_state
from ..rundir import RunDir
from ..store import STATUS_OK
from .submission import submission_status


def run_info(run_dir: Path) -> dict[str, Any]:
    """A summary of a run directory as plain data."""
    config = RunDir(run_dir).read_config_dict()
    store = RunDir(run_dir).open_store()
    chains, draws, n = store.shape
    done = store.done()
    status = store.chain_status()
    errors = store.chain_errors()
    train = store.train_loss()
    locks = holders(RunDir(run_dir).locks)
    per_chain = []
    for c in range(chains):
        row = train[c]
        seen = row[np.isfinite(row)]
        holder = locks.get(c)
        live = holder is not None and not holder.stale()
        if status[c] != STATUS_OK:
            state = "failed"
        elif done[c].all():
            state = "done"
        elif live:
            state = "running"
        elif seen.size or done[c].any():
            state = "interrupted"
        else:
            state = "pending"
        ckpt = _checkpoint_step(run_dir, c)
        per_chain.append(
            {
                "chain": c,
                "state": state,
                "draws_done": int(done[c].sum()),
                "checkpoint_step": ckpt,
                "holder": holder.name if holder is not None else None,
                "lock_stale": bool(holder is not None and not live),
                "train_loss_first": float(seen[0]) if seen.size else None,
                "train_loss_last": float(seen[-1]) if seen.size else None,
                "steps_recorded": int(seen.size),
                "error": errors.get(str(c)),
            }
        )
    metrics_path = RunDir(run_dir).metrics_file
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    state = kernel_state(store)
    return {
        "run_dir": str(run_dir),
        "chains": chains,
        "draws_per_chain": draws,
        "n": n,
        "draws_done": int(done.sum()),
        "draws_total": int(done.size),
        "reduced": store.has_kernel() or store.has_stream_neighbours(),
        "kernel_state": state.as_dict(),
        "reduce": store.reduce_record or None,
        "fingerprints": store.fingerprints,
        "per_chain": per_chain,
        "states": {k: sum(1 for c in per_chain if c["state"] == k)
                   for k in ("done", "running", "interrupted", "pending", "failed")},
        "slurm": _slurm(run_dir),
        "summary": (metrics or {}).get("summary"),
        "guards": run_verdict(store, config),
        "config": config,
    }


_FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                  "BOOT_FAIL", "DEADLINE"}


def _checkpoint_step(run_dir: Path, chain: int) -> int | None:
    """SGLD steps of a chain's newest readable checkpoint (None without one).

    From the checkpoint's JSON sidecar when it describes the file on disk, so
    that ``info`` needs no torch; otherwise (a checkpoint written before
    sidecars, or the sidecar of a killed write) from the checkpoint itself.
    """
    directory = RunDir(run_dir).checkpoints
    step = sidecar_step(directory, chain)
    if step is not None or not has_checkpoint(directory, chain):
        return step
    from ..checkpoint import load_chain  # imports torch: only for a checkpoint without sidecar

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = load_chain(directory, chain)
    return state.step if state is not None else None


def _slurm(run_dir: Path) -> dict[str, Any] | None:
    """The run's latest SLURM submission and its job states, if it was submitted."""
    try:
        return submission_status(Path(run_dir))
    except Exception as exc:  # info must work even where submitit or sacct misbehave
        return {"error": f"{type(exc).__name__}: {exc}"}


def format_info(info: dict[str, Any]) -> str:
    """Human-readable text of ``run_info``."""
    s = info["config"]["sampler"]
    lines = [
        f"run {info['run_dir']}",
        f"task {info['config']['task']['target']} {info['config']['task'].get('args') or ''}",
        f"sampler: chains={s['chains']} draws={s['draws']} burnin={s['burnin_steps']} "
        f"every={s['steps_between_draws']} b={s['batch_size']} lr={s['lr']} "
        f"nbeta={s['nbeta']} localization={s['localization']} seed={s['seed']}",
        f"N={info['n']}  draws done {info['draws_done']}/{info['draws_total']}  "
        f"kernel {_kernel_line(info)}"
        + (" (neighbours only)" if (info["reduce"] or {}).get("kernel") == "neighbours" else ""),
        "chains: " + ", ".join(f"{n} {k}" for k, n in info["states"].items() if n),
        "chain  state        draws   ckpt step  train loss first -> last",
    ]
    for c in info["per_chain"]:
        first, last = c["train_loss_first"], c["train_loss_last"]
        trace = f"{first:.4g} -> {last:.4g}" if first is not None else "-"
        ckpt = "-" if c["checkpoint_step"] is None else str(c["checkpoint_step"])
        lines.append(f"{c['chain']:>5}  {c['state']:<12} {c['draws_done']:>5}  {ckpt:>10}  {trace}")
        if c["holder"]:
            what = "stale lock of" if c["lock_stale"] else "held by"
            lines.append(f"       {what} {c['holder']}")
        if c["error"]:
            lines.append(f"       {c['error']}")
    slurm = info.get("slurm")
    if slurm and "error" in slurm:
        lines.append(f"slurm: {slurm['error']}")
    elif slurm:
        lines.append(f"slurm ({slurm['cluster']}): array job {slurm['array_job_id']}, "
                     f"submitted {slurm['submitted_at']}, logs in {slurm['folder']}")
        for t in slurm["tasks"]:
            lines.append(f"  task {t['job_id']:<14} chains {t['chains']}  {t.get('state') or '?'}")
        if slurm.get("reduce_job_id"):
            lines.append(f"  reduce {slurm['reduce_job_id']:<12} {slurm.get('reduce_state') or '?'}")
        bad = [t["job_id"] for t in slurm["tasks"]
               if (t.get("state") or "").split(" ")[0] in _FAILED_STATES]
        if bad:
            lines.append(f"  array tasks {bad} did not succeed: see their logs in "
                         f"{slurm['folder']} and the chain errors above")
            if slurm.get("reduce_state") == "PENDING":
                lines.append(f"  the reduce job can never start: scancel {slurm['reduce_job_id']},"
                             " fix the cause and 'losskernel submit' again (only unfinished "
                             "chains are queued)")
    guards = info.get("guards")
    if guards:
        ref = guards["reference_train_loss"]
        head = (f"guard rails ({guards['settings']['action']}): train loss at w* {ref:.4g}, "
                f"drift tolerance {guards['loss_tolerance']:.3g}" if ref is not None else
                "guard rails: no loss at w* recorded (run made before guard rails)")
        lines.append(head + (f"; {len(guards['flagged_chains'])} chain(s) flagged"
                             if guards["lines"] else "; no chain flagged"))
        lines += [f"  {line}" for line in guards["lines"]]
    if info.get("summary"):
        lines.append("analysis:")
        lines += [f"  {k}: {v}" for k, v in info["summary"].items()]
    return "\n".join(lines)


def _kernel_line(info: dict[str, Any]) -> str:
    """The kernel's state in words (partial and stale kernels said so)."""
    state = info.get("kernel_state")
    if state is None:  # an info dict of an older version
        return "reduced" if info["reduced"] else "not reduced"
    return KernelState(**state).describe()
