"""What ``losskernel info`` shows: config, draws done per chain, chain health, results so far."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .sample import read_run_config, store_path
from .store import STATUS_OK, RunStore


def run_info(run_dir: Path) -> dict[str, Any]:
    """A summary of a run directory as plain data."""
    config = read_run_config(run_dir)
    store = RunStore.open(store_path(run_dir))
    chains, draws, n = store.shape
    done = store.done()
    status = store.chain_status()
    errors = store.chain_errors()
    train = store.train_loss()
    locks = {p.stem for p in (Path(run_dir) / "locks").glob("chain_*.lock")}
    per_chain = []
    for c in range(chains):
        row = train[c]
        seen = row[np.isfinite(row)]
        state = "failed" if status[c] != STATUS_OK else (
            "done" if done[c].all() else ("running" if f"chain_{c:05d}" in locks else "pending")
        )
        per_chain.append(
            {
                "chain": c,
                "state": state,
                "draws_done": int(done[c].sum()),
                "train_loss_first": float(seen[0]) if seen.size else None,
                "train_loss_last": float(seen[-1]) if seen.size else None,
                "steps_recorded": int(seen.size),
                "error": errors.get(str(c)),
            }
        )
    metrics_path = Path(run_dir) / "analysis" / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    return {
        "run_dir": str(run_dir),
        "chains": chains,
        "draws_per_chain": draws,
        "n": n,
        "draws_done": int(done.sum()),
        "draws_total": int(done.size),
        "reduced": store.has_kernel(),
        "reduce": dict(store.attrs.get("reduce", {})) or None,
        "fingerprints": dict(store.attrs.get("fingerprints", {})),
        "per_chain": per_chain,
        "summary": (metrics or {}).get("summary"),
        "config": config,
    }


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
        f"kernel {'reduced' if info['reduced'] else 'not reduced'}",
        "chain  state    draws  train loss first -> last",
    ]
    for c in info["per_chain"]:
        first, last = c["train_loss_first"], c["train_loss_last"]
        trace = f"{first:.4g} -> {last:.4g}" if first is not None else "-"
        lines.append(f"{c['chain']:>5}  {c['state']:<8} {c['draws_done']:>5}  {trace}")
        if c["error"]:
            lines.append(f"       {c['error']}")
    if info.get("summary"):
        lines.append("analysis:")
        lines += [f"  {k}: {v}" for k, v in info["summary"].items()]
    return "\n".join(lines)
