"""Development over training (paper Appendix D.5): one loss kernel per checkpoint.

``losskernel run`` on a config with ``development.checkpoints`` runs this instead of a
single run. Each checkpoint becomes an ordinary run directory,
``OUTPUT/development/<i>_<stem>/``, whose config is the shared one with the checkpoint
put into ``task.args[development.task_arg]``: the eval set, the sampler and the UMAP
settings are therefore identical across checkpoints, and only the weights differ.
Because every sub-run is an ordinary run, an interrupted development run resumes
checkpoint by checkpoint (sampling resumes its chains; a reduced or analysed sub-run
is not redone), and each sub-run can be opened with ``losskernel info``/``analyze``.

At the end the 2-D UMAP of every checkpoint is drawn side by side, coloured by label
with one shared colour per label, in ``OUTPUT/development_maps.png``, and every
checkpoint's summary metrics (PC1 AUC etc.) go to ``OUTPUT/development.json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config, DevelopmentConfig, config_from_dict
from ..rundir import RunDir, atomic_write

FIGURE_FILE = "development_maps.png"
SUMMARY_FILE = "development.json"


def subrun_dir(output: Path, index: int, checkpoint: str) -> Path:
    """The run directory of checkpoint ``index``: OUTPUT/development/<i>_<stem>."""
    return RunDir(Path(output)).development / f"{index}_{Path(checkpoint).stem}"


def subrun_configs(config: Config) -> list[Config]:
    """One complete, validated Config per checkpoint: the shared one with the checkpoint
    in ``task.args`` and ``output`` moved to its sub-run; ``development`` is cleared so
    that each sub-run is an ordinary single run."""
    dev = config.development
    if not dev.checkpoints:
        raise ValueError("config has no development.checkpoints")
    out = []
    for i, checkpoint in enumerate(dev.checkpoints):
        path = str(Path(checkpoint).expanduser().resolve())
        data = config.to_dict()
        data["task"]["args"] = {**data["task"]["args"], dev.task_arg: path}
        data["output"] = str(subrun_dir(config.run_dir, i, checkpoint))
        data["development"] = dataclasses.asdict(DevelopmentConfig())
        out.append(config_from_dict(data))
    return out


def _run_one(config: Config, progress: bool) -> dict | None:
    """Sample (or resume), reduce and analyse one sub-run with the job sequence, keeping
    what an earlier call finished; the metrics (main process; None on other ranks)."""
    from .run import run_sequence

    outcome = run_sequence(config, progress=progress, keep_finished=True,
                           warning_prefix=f"{config.run_dir.name}: ")
    if outcome.sample is not None:
        for chain, message in sorted(outcome.sample.failed.items())[:1]:
            print(f"losskernel: {config.run_dir}: chain {chain} FAILED: {message}",
                  file=sys.stderr)
    if not outcome.is_main:
        return None
    return outcome.metrics if outcome.metrics is not None else {}


def development_figure(
    maps: list[tuple[str, np.ndarray | None]],
    labels: np.ndarray | None,
    label_names: list[str] | None,
    path: Path,
) -> Path:
    """The 2-D maps side by side, one panel per checkpoint (titled with its name), every
    panel coloured by label with the same colour per label; a panel without a map says
    so instead."""
    from ..analysis import plots

    plt = plots.plt
    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 4.4), squeeze=False)
    spec = plots.colour_spec(labels, "categorical", label_names) if labels is not None else None
    for ax, (title, coords) in zip(axes[0], maps, strict=True):
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if coords is None:
            ax.text(0.5, 0.5, "no UMAP", ha="center", va="center", transform=ax.transAxes)
            continue
        order = np.random.default_rng(0).permutation(len(coords))
        colours = spec["colours"][order] if spec is not None else "tab:blue"
        ax.scatter(coords[order, 0], coords[order, 1], c=colours,
                   s=float(np.clip(2000 / max(len(coords), 1), 0.5, 20)), linewidths=0)
    if spec is not None and spec["legend"]:
        import matplotlib.lines

        handles = [matplotlib.lines.Line2D([], [], marker="o", ls="", color=c, label=name)
                   for name, c in spec["legend"]]
        axes[0][-1].legend(handles=handles, title="label", fontsize=7, title_fontsize=8,
                           loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("UMAP of the loss kernel over training (same eval set and UMAP settings)",
                 fontsize=10)
    return plots.save_figure(fig, path)


def run_development(config: Config, progress: bool = True) -> dict[str, Any]:
    """Run every checkpoint of ``config.development`` and compare their maps.

    Returns (and, in the main process, writes to OUTPUT/development.json) a dict with
    one entry per checkpoint: its name, path, run directory and summary metrics.
    """
    from ..distributed import placement_from_env

    is_main = placement_from_env().is_main
    subs = subrun_configs(config)
    entries: list[dict[str, Any]] = []
    for i, (checkpoint, sub) in enumerate(zip(config.development.checkpoints, subs,
                                              strict=True)):
        if progress and is_main:
            print(f"checkpoint {i + 1}/{len(subs)}: {checkpoint} -> {sub.run_dir}")
        metrics = _run_one(sub, progress)
        if metrics is not None:
            entries.append({"name": Path(checkpoint).stem, "checkpoint": checkpoint,
                            "run_dir": str(sub.run_dir),
                            "summary": metrics.get("summary", {})})
    if not is_main:
        return {}
    out = config.run_dir
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"checkpoints": entries}
    if config.analysis.enabled:
        maps: list[tuple[str, np.ndarray | None]] = []
        labels = label_names = None
        for entry in entries:
            store = RunDir(Path(entry["run_dir"])).open_store()
            maps.append((entry["name"], store.read_embedding("umap_2d")))
            labels, label_names = store.labels(), store.label_names()
        development_figure(maps, labels, label_names, out / FIGURE_FILE)
        result["figure"] = FIGURE_FILE
    atomic_write(out / SUMMARY_FILE, json.dumps(result, indent=2, default=str) + "\n")
    return result
