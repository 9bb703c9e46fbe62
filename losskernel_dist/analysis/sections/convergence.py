"""Chain health and convergence: CKA of the kernel over pooled draws (paper Appendix D.2 A),
split R-hat and ESS of each sample's loss across chains (ArviZ), training-loss traces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...config import AnalysisConfig, Config
from ...store import RunStore
from .. import plots
from ..convergence import cka_over_draws, rhat_ess, summarise_rhat_ess, train_loss_health
from ..kernelio import DrawReader
from ..registry import analysis
from ..section import Section

RHAT_SUMMARY = ("rhat_median", "rhat_max", "ess_bulk_median", "ess_bulk_min")


class ConvergenceSection(Section):
    """The three diagnostics; the summary carries their headline numbers."""

    def summary(self) -> dict[str, Any]:
        numbers = self.numbers or {}
        out: dict[str, Any] = {}
        curve = numbers.get("cka_over_draws", {})
        if curve.get("available"):
            out["cka_half_draws"] = curve["cka_at_half"]
        mix = numbers.get("rhat_ess", {})
        if mix.get("available"):
            out.update({key: mix[key] for key in RHAT_SUMMARY})
        train = numbers.get("train_loss", {})
        if "max_abs_drift" in train:
            out["train_loss_max_drift"] = train["max_abs_drift"]
        return out


@analysis(report="convergence", title="Chain health and convergence")
def convergence(settings: AnalysisConfig, config: Config, store: RunStore,
                folder: Path) -> ConvergenceSection:
    """Read the usable draws in column blocks (DrawReader); never the N x N kernel."""
    reader = DrawReader.for_store(store)
    numbers: dict[str, Any] = {}
    section = ConvergenceSection(numbers=numbers)
    curve = cka_over_draws(reader, np.asarray(store.kernel_array("mean")[...]),
                           settings.cka_grid, settings.cka_max_draws)
    numbers["cka_over_draws"] = curve
    if curve.get("available"):
        path = plots.cka_curve(curve["s"], curve["cka"], curve["draws"],
                               curve["thinning_stride"], folder / "cka_over_draws.png")
        section.add_figure(
            path, "Kernel convergence over draws",
            "CKA between the kernel of the first s draws (pooled over chains, draw-major) "
            "and the kernel of all of them (paper Appendix D.2 A). A curve that flattens "
            "near 1 means more draws would barely change the kernel.")
    else:
        section.skipped["cka_over_draws"] = curve.get("reason", "")
    mix = rhat_ess(reader, seed=settings.seed)
    numbers["rhat_ess"] = summarise_rhat_ess(mix)
    if mix.get("available"):
        path = plots.rhat_ess(mix["rhat"], mix["ess_bulk"], mix["draws"], folder / "rhat_ess.png")
        section.add_figure(
            path, "Mixing across chains",
            f"Per-sample split R-hat and bulk effective sample size of the loss over "
            f"{mix['chains']} chains x {mix['draws_per_chain']} draws (ArviZ)"
            + (f", for a random subset of {len(mix['samples'])} samples"
               if mix["subsampled"] else "")
            + ". R-hat near 1 means the chains agree on that sample's loss distribution.")
    else:
        section.skipped["rhat_ess"] = mix.get("reason", "")
    burnin = int(config.sampler.burnin_steps)
    train = store.train_loss()
    numbers["train_loss"] = train_loss_health(train, burnin)
    if np.isfinite(train).any():
        path = plots.train_loss_traces(train, burnin, folder / "train_loss.png")
        section.add_figure(
            path, "Training loss of every chain",
            "Minibatch training loss at each SGLD step (burn-in shaded). Healthy chains "
            "rise a little from the trained loss and then fluctuate around one level.")
    return section
