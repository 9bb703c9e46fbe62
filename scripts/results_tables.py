"""Print the Markdown tables of docs/results.md from experiment records (bench/experiment.py).

    python scripts/results_tables.py bench/results/experiment-demo_modular-*.json

One table per record, by what the record holds: a plain run's metrics (the
modular demo, digits), a development run's checkpoints, or a calibration grid.
Paste the output into docs/results.md under a line that cites the record;
tests/ci/test_docs_numbers.py checks every number against it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def g(x: float | None, digits: int = 3) -> str:
    """``digits`` significant digits, scientific notation for small or large values."""
    if x is None:
        return "n/a"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.{digits - 1}e}".replace("e-0", "e-").replace("e+0", "e")
    text = f"{x:.{digits}g}"
    return f"{x:,.0f}" if "e" in text else text  # 30000 as 30,000, not 3e+04


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def run_table(result: dict[str, Any]) -> list[str]:
    m = result["metrics"]
    s, conv = m["summary"], m["convergence"]["rhat_ess"]
    lines = [_row("quantity (analysis/metrics.json)", "value"), _row("---", "---"),
             _row("samples N; pooled draws M", f"{s['n']}; {s['draws']}")]
    groups = m.get("groups", {})
    auc = groups.get("pc1_auc", {})
    if auc.get("available"):
        lines.append(_row("ROC-AUC of the first principal component against the label "
                          "(`pc1_auc`)", f"**{g(auc['auc'], 3)}**"))
    for pair, st in groups.get("covariance_by_pair_type", {}).items():
        lines.append(_row(f"covariance, {pair}: mean / median (sd)",
                          f"{g(st['mean'])} / {g(st['quantiles']['0.5'])} ({g(st['std'])})"))
    for name, lift in m.get("attribute_lift", {}).get("attributes", {}).items():  # 0/1 flags
        one = lift.get("per_value", {}).get("1")
        if lift.get("levels") == 2 and one and one.get("lift") is not None:
            lines.append(_row(f"samples with {name} = 1 ({one['queries']}): neighbours that "
                              "share it; lift over its base rate",
                              f"{g(100 * one['match_rate'])}%; **{g(one['lift'])}**"))
    mem = m.get("memorization", {})
    if mem.get("available"):
        lines += [
            _row("ROC-AUC of K_ii, flagged vs clean (`memorization.auc`)",
                 f"**{g(mem['auc'])}**"),
            _row(f"mean K_ii, flagged ({mem['flagged']}) / clean ({mem['clean']})",
                 f"{g(mem['mean_var_flagged'])} / {g(mem['mean_var_clean'])}"),
            _row("median K_ii, flagged / clean",
                 f"{g(mem['median_var_flagged'])} / {g(mem['median_var_clean'])}"),
        ]
    lines += [
        _row("R-hat median / max; bulk ESS median",
             f"{g(conv['rhat_median'], 4)} / {g(conv['rhat_max'], 4)}; "
             f"{g(conv['ess_bulk_median'])}"),
        _row("CKA(kernel of the first half of the draws, final kernel)",
             g(s["cka_half_draws"], 2)),
        _row("train loss at w*; largest drift of a chain's train loss",
             f"{g(m['guards']['reference_train_loss'])}; {g(s['train_loss_max_drift'])}"),
        _row("guard-flagged chains", str(s["guard_flagged_chains"])),
        _row("wall time of `losskernel run` (s): whole run / reduce / analysis",
             f"{result['seconds']:.0f} / {m['run']['reduce']['seconds']:.1f} / "
             f"{m['seconds']:.0f}"),
        _row("peak RSS (GiB); foreign CPU per second during the run",
             f"{result['peak_rss_gib']:.2f}; {result['load']['foreign_cpu_per_s']:.2f}"),
    ]
    return lines


def development_table(result: dict[str, Any]) -> list[str]:
    lines = [_row("checkpoint", "PC1 ROC-AUC", "mean cov within / across tasks",
                  "R-hat median", "CKA half draws"), _row(*["---"] * 5)]
    for ck in result["development"]["checkpoints"]:
        s = ck["summary"]
        lines.append(_row(ck["name"], g(s["pc1_auc"]),
                          f"{g(s['within_cov_mean'], 2)} / {g(s['cross_cov_mean'], 2)}",
                          g(s["rhat_median"], 4), g(s["cka_half_draws"], 2)))
    lines.append("")
    lines.append(f"Wall time {result['seconds']:.0f} s; foreign CPU "
                 f"{result['load']['foreign_cpu_per_s']:.2f} per second.")
    return lines


def calibration_table(result: dict[str, Any]) -> list[str]:
    cal = result["calibration"]
    lines = [_row("lr", "localization", "train loss at w* -> late", "split-half CKA",
                  "projected to the run", "admissible", "why not"), _row(*["---"] * 7)]
    for st in cal["settings"]:
        setting = st["setting"]
        lines.append(_row(
            g(setting["lr"], 2), g(setting["localization"], 2),
            f"{g(st['train_loss_ref'])} -> {g(st['train_loss_late'])}",
            g(st["split_half_cka"]), g(st["projected_cka"]),
            "**yes**" if st["admissible"] else "no",
            "; ".join(r.split(" (")[0] for r in st.get("reasons", [])) or "-"))
    lines.append("")
    lines.append(f"Recommended: `{cal.get('recommended_name')}`. Wall time "
                 f"{result['seconds']:.0f} s; foreign CPU "
                 f"{result['load']['foreign_cpu_per_s']:.2f} per second.")
    return lines


def main(paths: list[str]) -> None:
    for path in paths:
        record = json.loads(Path(path).read_text())
        result = record["result"]
        print(f"Record: `{path}` (commit `{record['git_commit'][:7]}`"
              f"{', uncommitted changes' if record['git_dirty'] else ''}).\n")
        if "calibration" in result:
            lines = calibration_table(result)
        elif "development" in result:
            lines = development_table(result)
        else:
            lines = run_table(result)
        print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
