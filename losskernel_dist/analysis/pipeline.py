"""``losskernel analyze RUN_DIR``: a reduced run -> metrics.json, PNG figures, index.html.

Each step below reads what the store holds, computes one analysis with the
module that owns it, records its numbers in a section of ``metrics.json``
(always with the number of draws it rests on) and draws its figures. A step
that does not apply to the run (no labels, one chain, no images, no WordNet
labels...) is skipped with its reason under ``skipped``, which the report
shows. Nothing here holds the N x N kernel: every pass over it streams row
blocks of the store's ``kernel/corr`` or ``kernel/cov``.

A run reduced with ``reduce.kernel: neighbours`` has no dense kernel, only the
streamed top-k lists (``neighbours/*``, reduce/topk.py) and kernel/mean, var.
Its neighbour table, maps, attribute lift, thumbnails, memorization and
convergence come from those; the steps that need rho or K itself (PC1 and the
task AUC, covariance by pair type, the kernel picture, and taxonomic lift
without same-label exclusion) are skipped, each with that reason.

metrics.json layout: ``summary`` (short name -> number, printed by the CLI),
``run`` (what the kernel rests on), one section per analysis, ``figures``
(file, title, caption, section) and ``skipped``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import AnalysisConfig, ConfigError, config_default, section_from_dict
from ..guards.judge import run_verdict
from ..rundir import RunDir
from ..store import RunStore, StoreError
from . import plots
from .attributes import attribute_lift, discrete_attributes, farthest_point_groups, mean_rgb
from .convergence import cka_over_draws, rhat_ess, summarise_rhat_ess, train_loss_health
from .embedding import knn_graph, umap_embedding
from .groups import Grouping, pair_distributions, pc1, pc1_auc, resolve_group
from .kernelio import DenseRows, DrawReader
from .memorization import memorization, resolve_flag
from .neighbours import Neighbours, compute_neighbours
from .picture import hierarchy_picture, kernel_picture, sort_order
from .thumbnails import IMAGE_ATTRIBUTE, choose_references, thumbnail_grid

ANALYSIS_DIR = "analysis"
METRICS_FILE = "metrics.json"
REPORT_FILE = "index.html"
MIN_UMAP_SAMPLES = 10
MAX_MAP_COLOURINGS = 8
NO_DENSE_KERNEL = ("needs the dense N x N kernel, which this run does not have "
                   "(reduce.kernel: neighbours)")


@dataclass
class Context:
    """What every step needs: the run, its settings, and what earlier steps found."""

    run_dir: Path
    out: Path
    store: RunStore
    cfg: AnalysisConfig
    run_config: dict
    draws: int
    n: int
    labels: np.ndarray | None
    label_names: list[str] | None
    attributes: dict[str, np.ndarray]
    metrics: dict[str, Any] = field(default_factory=dict)
    figures: list[dict[str, str]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    hierarchy: Any = None
    neighbours: Neighbours | None = None
    pc1_scores: np.ndarray | None = None
    grouping: Grouping | None = None
    grouping_why: str = ""
    flag_name: str | None = None
    flag_why: str = ""
    dense: bool = True  # the run has kernel/corr and kernel/cov
    stored_exclusion: bool | None = None  # same-label exclusion of streamed lists in use
    k: int = 0  # neighbours per sample in the lists in use (analysis.neighbours or fewer)

    @property
    def corr(self) -> DenseRows:
        return DenseRows(self.store.kernel_array("corr"))

    def figure(self, path: Path, title: str, caption: str, section: str) -> None:
        self.figures.append({"file": path.name, "title": title, "caption": caption,
                             "section": section})

    def label_text(self) -> list[str] | None:
        """Display name of each sample's label."""
        if self.labels is None:
            return None
        names = self.label_names
        return [str(names[v]) if names is not None and 0 <= v < len(names) else str(v)
                for v in self.labels.tolist()]

    @property
    def excluding(self) -> bool:
        """Same-label exclusion in force: asked for, and labels with at least 2 values exist.

        For streamed lists it is what the reduce applied, which the lists cannot undo.
        """
        if self.stored_exclusion is not None:
            return self.stored_exclusion
        return bool(self.cfg.exclude_same_label and self.labels is not None
                    and np.unique(self.labels).size >= 2)

    def skip_without_kernel(self, name: str) -> bool:
        """Record ``name`` as skipped when the run has no dense kernel; True if so."""
        if not self.dense:
            self.skipped[name] = NO_DENSE_KERNEL
        return not self.dense


def load_analysis_config(run_config: dict) -> AnalysisConfig:
    """The run's ``analysis`` section, validated (defaults for keys it lacks)."""
    return section_from_dict(run_config, AnalysisConfig)


def analyze_run(run_dir: Path) -> dict:
    """Run every applicable analysis on a reduced run; returns the metrics written."""
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    run_config = RunDir(run_dir).read_config_dict()
    cfg = load_analysis_config(run_config)
    store = RunDir(run_dir).open_store(mode="r+")
    dense = store.has_kernel()
    if not dense and not store.has_stream_neighbours():
        raise StoreError(f"run {str(run_dir)!r} has no kernel yet: run 'losskernel reduce' first")
    out = run_dir / ANALYSIS_DIR
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()  # figures of an earlier analysis that may no longer apply
    reduce_info = store.reduce_record
    ctx = Context(
        run_dir=run_dir, out=out, store=store, cfg=cfg, run_config=run_config,
        draws=int(reduce_info.get("draws_used", 0)), n=store.shape[2],
        labels=store.labels(), label_names=store.label_names(),
        attributes=store.attributes(), dense=dense,
    )
    preflight(ctx)
    ctx.metrics["run"] = run_section(ctx, reduce_info)
    timings: dict[str, float] = {}
    for step in (step_guards, step_hierarchy, step_images, step_neighbours, step_groups, step_picture,
                 step_maps, step_convergence, step_memorization, step_taxonomic_lift,
                 step_attribute_lift, step_thumbnails):
        t_step = time.perf_counter()
        step(ctx)
        timings[step.__name__.removeprefix("step_")] = round(time.perf_counter() - t_step, 3)
    ctx.metrics["summary"] = summary(ctx)
    ctx.metrics["figures"] = ctx.figures
    ctx.metrics["skipped"] = ctx.skipped
    ctx.metrics["seconds"] = round(time.perf_counter() - t0, 2)
    ctx.metrics["step_seconds"] = timings
    metrics = jsonable(ctx.metrics)
    metrics = {"summary": metrics.pop("summary"), **metrics}
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    from ..report.html import write_report

    write_report(out / REPORT_FILE, metrics, run_config, out)
    return metrics


# --------------------------------------------------------------------------- steps


def run_section(ctx: Context, reduce_info: dict) -> dict[str, Any]:
    chains, draws_per_chain, n = ctx.store.shape
    return {
        "run_dir": str(ctx.run_dir),
        "n": n,
        "chains": chains,
        "draws_per_chain": draws_per_chain,
        "draws": ctx.draws,
        "reduce": reduce_info,
        "n_train": ctx.store.n_train,
        "fingerprints": ctx.store.fingerprints,
        "labels": None if ctx.labels is None else int(np.unique(ctx.labels).size),
        "label_names": ctx.label_names if ctx.label_names and len(ctx.label_names) <= 50 else None,
        "attributes": {k: list(np.shape(v)) for k, v in ctx.attributes.items()},
        "analysis_config": {k: getattr(ctx.cfg, k) for k in ctx.cfg.__dataclass_fields__},
    }


def preflight(ctx: Context) -> None:
    """Settle the choices the config makes (group, flag), so a bad one fails before any work."""
    try:
        ctx.grouping, ctx.grouping_why = resolve_group(
            ctx.cfg.group_attribute, ctx.labels, ctx.label_names, ctx.attributes)
        ctx.flag_name, ctx.flag_why = resolve_flag(ctx.cfg.memorization_attribute,
                                                   ctx.attributes)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if ctx.cfg.wordnet in ("on", "imagenet1k") and ctx.labels is None:
        raise ConfigError(f"analysis.wordnet: {ctx.cfg.wordnet}, but the run has no labels")


def step_guards(ctx: Context) -> None:
    """The guard rails' verdict on the chains, so the report says when a kernel rests on
    chains that blew up, drifted or kept moving away from w* (guards.py)."""
    ctx.metrics["guards"] = run_verdict(ctx.store, ctx.run_config)


def step_hierarchy(ctx: Context) -> None:
    """Build the WordNet hierarchy of the labels when configured or detected."""
    from . import wordnet

    mode = ctx.cfg.wordnet
    if mode == "off":
        ctx.skipped["wordnet"] = "analysis.wordnet is off"
        return
    if ctx.labels is None:
        ctx.skipped["wordnet"] = "the run has no labels"
        return
    names = ctx.label_names
    if mode == "imagenet1k":
        names = wordnet.imagenet1k_wnids()
        if ctx.labels.min() < 0 or ctx.labels.max() >= 1000:
            raise ConfigError("analysis.wordnet: imagenet1k, but labels are not in 0..999")
    elif not wordnet.looks_like_wordnet(names):
        if mode == "on":
            raise ConfigError("analysis.wordnet: on, but the label names are not WordNet ids "
                              "(n02084071) or synset names (dog.n.01)")
        ctx.skipped["wordnet"] = "label names are not WordNet ids"
        return
    try:
        ctx.hierarchy = wordnet.build_hierarchy(names)
    except wordnet.WordNetUnavailable as exc:
        if mode == "auto":
            ctx.skipped["wordnet"] = str(exc)
            return
        raise ConfigError(f"analysis.wordnet: {exc}") from exc
    ctx.label_names = list(names)
    ctx.metrics["hierarchy"] = ctx.hierarchy.describe()


def step_images(ctx: Context) -> None:
    """Colour groups from mean RGB (farthest-point sampling) for image tasks."""
    images = ctx.attributes.get(IMAGE_ATTRIBUTE)
    if images is None:
        ctx.skipped["colour_groups"] = f"no '{IMAGE_ATTRIBUTE}' attribute (not an image task)"
        return
    rgb = mean_rgb(images)
    centres, groups = farthest_point_groups(rgb, ctx.cfg.colour_groups, ctx.cfg.seed)
    ctx.attributes["colour_group"] = groups
    ctx.metrics["colour_groups"] = {
        "groups": int(len(centres)),
        "method": "mean RGB per image, farthest-point sampling of centres, nearest centre",
        "centres_rgb": rgb[centres].round(4).tolist(),
        "sizes": np.bincount(groups, minlength=len(centres)).tolist(),
    }


def step_neighbours(ctx: Context) -> None:
    """Top-k / bottom-k neighbour lists, stored in the run."""
    if not ctx.dense:
        stored_neighbours(ctx)
        return
    k = ctx.k = ctx.cfg.neighbours
    k_top = max(k, ctx.cfg.umap_neighbours - 1)
    excluding = ctx.excluding
    nb = compute_neighbours(ctx.corr, k_top, k, ctx.labels, exclude_same_label=excluding)
    ctx.neighbours = nb
    attrs = {**nb.attrs(), "k": k, "draws": ctx.draws}
    ctx.store.write_neighbours(nb.top_index, nb.top_corr, nb.bottom_index, nb.bottom_corr, attrs)
    top = nb.top_corr[:, :k]
    section: dict[str, Any] = {
        "k": k,
        "k_stored_top": k_top,
        "exclude_same_label": excluding,
        "draws": ctx.draws,
        "stored_in": "store.zarr analysis/neighbours (top_index, top_corr, bottom_index, "
                     "bottom_corr)",
        "mean_top1_corr": _nanmean(nb.top_corr[:, 0]),
        "mean_topk_corr": _nanmean(top),
        "mean_bottomk_corr": _nanmean(nb.bottom_corr),
        "examples": neighbour_examples(ctx, nb, count=5),
    }
    if ctx.cfg.exclude_same_label and not excluding:
        section["note"] = "same-label exclusion asked for but the run has fewer than 2 labels"
    if ctx.labels is not None and not excluding:
        section["label_lift"] = attribute_lift(ctx.labels, nb.top_index[:, :k], None, False)
    ctx.metrics["neighbours"] = section


NEIGHBOURS_SKIPPED = ("maps", "attribute_lift", "thumbnails")


def stored_neighbours(ctx: Context) -> None:
    """The neighbour section of a run without the dense kernel, from the streamed lists.

    The lists are used as the reduce wrote them: their k (at most analysis.neighbours
    of them are used), their bottom-k and their same-label exclusion, each said in
    the section when it differs from what the analysis config asks.
    """
    data = ctx.store.read_stream_neighbours()
    attrs = data["attrs"]
    metric = attrs.get("metric", "corr")
    if metric != "corr":
        why = (f"the run's streamed neighbours rank by {metric} (reduce.neighbours_metric), "
               "the analysis by correlation, and there is no dense kernel to recompute them")
        for name in ("neighbours", *NEIGHBOURS_SKIPPED, "taxonomic_lift"):
            ctx.skipped[name] = why
        return
    k_stored = int(attrs["k"])
    k = ctx.k = min(ctx.cfg.neighbours, k_stored)
    k_bottom = min(ctx.cfg.neighbours, int(attrs.get("k_bottom", 0)))
    ctx.stored_exclusion = bool(attrs.get("exclude_same_label", False))
    nb = Neighbours(data["top_index"], data["top_value"], data["bottom_index"][:, :k_bottom],
                    data["bottom_value"][:, :k_bottom], ctx.stored_exclusion)
    ctx.neighbours = nb
    section: dict[str, Any] = {
        "k": k,
        "k_stored_top": k_stored,
        "k_bottom": k_bottom,
        "exclude_same_label": ctx.stored_exclusion,
        "draws": ctx.draws,
        "source": "streamed by the neighbours reduce from the draws (no dense kernel)",
        "stored_in": "store.zarr neighbours (top_index, top_value, bottom_index, bottom_value)",
        "mean_top1_corr": _nanmean(nb.top_corr[:, 0]),
        "mean_topk_corr": _nanmean(nb.top_corr[:, :k]),
        "mean_bottomk_corr": _nanmean(nb.bottom_corr),
        "examples": neighbour_examples(ctx, nb, count=5),
    }
    notes = []
    if k < ctx.cfg.neighbours:
        notes.append(f"analysis.neighbours is {ctx.cfg.neighbours} but the reduce kept "
                     f"{k_stored} (reduce.neighbours_k)")
    if k_bottom < ctx.cfg.neighbours:
        notes.append(f"{k_bottom} least-correlated neighbours kept by the reduce "
                     "(reduce.neighbours_bottom_k)")
    asked = bool(ctx.cfg.exclude_same_label and ctx.labels is not None
                 and np.unique(ctx.labels).size >= 2)
    if asked != ctx.stored_exclusion:
        notes.append(f"analysis.exclude_same_label asks {asked} but the lists were reduced "
                     f"with {ctx.stored_exclusion}: rerun 'losskernel reduce' to change it")
    if notes:
        section["note"] = "; ".join(notes)
    if ctx.labels is not None and not ctx.excluding:
        section["label_lift"] = attribute_lift(ctx.labels, nb.top_index[:, :k], None, False)
    ctx.metrics["neighbours"] = section


def neighbour_examples(ctx: Context, nb: Neighbours, count: int) -> list[dict[str, Any]]:
    """A few references with their top and bottom neighbours, for the report's table."""
    refs = choose_references(ctx.n, count, ctx.cfg.seed)
    text = ctx.label_text()
    k_top = min(5, nb.top_index.shape[1], ctx.k or nb.top_index.shape[1])
    k_bottom = min(5, nb.bottom_index.shape[1])

    def item(j: int, rho: float) -> dict[str, Any]:
        out: dict[str, Any] = {"sample": int(j), "rho": float(rho)}
        if text is not None and j >= 0:
            out["label"] = text[j]
        return out

    return [
        {
            "sample": int(i),
            "label": text[i] if text is not None else None,
            "top": [item(j, r) for j, r in zip(nb.top_index[i, :k_top], nb.top_corr[i, :k_top],
                                               strict=True) if j >= 0],
            "bottom": [item(j, r) for j, r in zip(nb.bottom_index[i, :k_bottom],
                                                   nb.bottom_corr[i, :k_bottom], strict=True)
                       if j >= 0],
        }
        for i in refs
    ]


def step_groups(ctx: Context) -> None:
    """PC1 of the standardised loss vectors, its AUC for the group, covariance by pair type."""
    if ctx.skip_without_kernel("groups"):
        return
    comp = pc1(ctx.corr, seed=ctx.cfg.seed)
    ctx.pc1_scores = comp.scores
    section: dict[str, Any] = {
        "draws": ctx.draws,
        "pc1": {
            "eigenvalue": comp.eigenvalue,
            "explained_fraction": comp.explained,
            "iterations": comp.iterations,
            "relative_residual": comp.residual,
            "definition": "leading eigenvector of H rho H (PCA of standardised loss vectors)",
        },
    }
    grouping = ctx.grouping
    section["group"] = ctx.grouping_why
    ctx.metrics["groups"] = section
    if grouping is None:
        ctx.skipped["task_auc"] = ctx.grouping_why
        return
    section["group_source"] = grouping.source
    section["group_names"] = grouping.names
    if grouping.size == 2:
        auc = pc1_auc(comp.scores, grouping)
        section["pc1_auc"] = auc
        scores = comp.scores * auc["sign"]
        path = plots.pc1_histogram(scores, grouping.codes, grouping.names, auc["auc"],
                                   ctx.out / "pc1_groups.png")
        ctx.figure(path, "Task separation along PC1",
                   f"Projection of each sample's standardised loss vector on the first principal "
                   f"component, by {grouping.source} (paper Figure 2B). ROC-AUC {auc['auc']:.3f}; "
                   f"{ctx.draws} draws.", "groups")
    else:
        ctx.skipped["task_auc"] = f"group has {grouping.size} values; the AUC needs exactly 2"
    dist = pair_distributions(ctx.store.kernel_array("cov"), grouping, seed=ctx.cfg.seed)
    section["covariance_by_pair_type"] = {
        name: {k: v for k, v in d.items() if k != "values"} for name, d in dist.items()
    }
    path = plots.pair_histograms(dist, ctx.out / "covariance_pairs.png")
    ctx.figure(path, "Covariance distributions by pair type",
               f"K_ij for pairs i < j within each group and across groups of {grouping.source} "
               f"(paper Figure 2D), log-scaled density; {ctx.draws} draws. Histograms from a "
               "uniform subsample of at most 200,000 pairs per type; statistics are exact.",
               "groups")


def step_picture(ctx: Context) -> None:
    """The sorted correlation matrix, block-averaged above max_plot_samples."""
    if ctx.skip_without_kernel("picture"):
        return
    rank = ctx.hierarchy.order if ctx.hierarchy is not None else None
    order, sorted_by = sort_order(ctx.n, ctx.labels, rank, ctx.pc1_scores)
    pic = kernel_picture(ctx.corr, order, sorted_by, ctx.cfg.max_plot_samples)
    distance = None
    if ctx.hierarchy is not None:
        distance = hierarchy_picture(pic, ctx.labels, ctx.hierarchy.distance_matrix())
    boundaries = []
    if ctx.labels is not None and ctx.hierarchy is None:
        sorted_labels = ctx.labels[pic.order]
        text = ctx.label_text()
        starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
        ends = np.r_[starts[1:], ctx.n]
        if len(starts) <= 50:
            boundaries = [(int(pic.bins[a]), int(pic.bins[b - 1]) + 1, text[pic.order[a]])
                          for a, b in zip(starts, ends, strict=True)]
    path = plots.kernel_picture(pic.matrix, pic.caption + f"; {ctx.draws} draws",
                                ctx.out / "kernel_picture.png", distance, boundaries)
    ctx.figure(path, "The correlation kernel",
               "rho_ij with samples " + pic.caption
               + (", beside the WordNet tree distance of their labels (paper Figure 1B)"
                  if distance is not None else "") + ".", "picture")
    ctx.metrics["picture"] = {"sorted_by": sorted_by, "block_averaged": pic.averaged,
                              "pixels": int(pic.matrix.shape[0]), "draws": ctx.draws}


def map_colourings(ctx: Context) -> list[tuple[str, np.ndarray, str, list[str] | None]]:
    """(title, values, kind, names) for each colouring of the maps."""
    out = []
    if ctx.hierarchy is not None:
        out.append(("WordNet hierarchy order", ctx.hierarchy.order[ctx.labels], "order", None))
    if ctx.labels is not None:
        out.append(("label", ctx.labels, "categorical", ctx.label_names))
    if ctx.pc1_scores is not None:
        out.append(("PC1 score", ctx.pc1_scores, "continuous", None))
    for name, values in ctx.attributes.items():
        values = np.asarray(values)
        if values.ndim != 1 or name == IMAGE_ATTRIBUTE:
            continue
        if ctx.labels is not None and np.array_equal(values, ctx.labels):
            continue  # the label colouring already shows it
        levels = np.unique(values).size
        if levels < 2:
            continue
        textual = values.dtype.kind in "bUSOT"  # bool, str (incl. numpy's StringDType)
        discrete = textual or (values.dtype.kind in "iu" and levels <= 20)
        out.append((f"attribute {name}", values, "categorical" if discrete else "continuous", None))
    return out[:MAX_MAP_COLOURINGS]


def step_maps(ctx: Context) -> None:
    """UMAP in 2-D and 3-D from the kNN graph of the neighbour lists."""
    if not ctx.cfg.umap:
        ctx.skipped["umap"] = "analysis.umap is off"
        return
    if ctx.n < MIN_UMAP_SAMPLES:
        ctx.skipped["umap"] = f"only {ctx.n} samples (UMAP needs at least {MIN_UMAP_SAMPLES})"
        return
    nb = ctx.neighbours
    if nb is None:
        return  # no correlation neighbour lists; step_neighbours said why
    want = min(ctx.cfg.umap_neighbours, ctx.n - 1)
    graph = knn_graph(nb.top_index, nb.top_corr, min(want, nb.top_index.shape[1] + 1))
    section: dict[str, Any] = {"draws": ctx.draws, "same_label_edges_removed": ctx.excluding}
    if not ctx.dense:
        section["graph_source"] = "streamed neighbour lists (no dense kernel)"
        if graph.n_neighbors < want:
            section["note"] = (f"UMAP's n_neighbors is {graph.n_neighbors}, not {want}: the "
                               f"reduce kept {nb.top_index.shape[1]} neighbours per sample "
                               "(raise reduce.neighbours_k)")
    coords = {}
    for dim in (2, 3):
        xy, settings = umap_embedding(graph, dim, ctx.cfg.umap_min_dist, ctx.cfg.seed)
        ctx.store.write_embedding(f"umap_{dim}d", xy, settings)
        coords[dim] = xy
        section[f"umap_{dim}d"] = settings
    ctx.metrics["maps"] = section
    excl = " Same-label edges removed from the kNN graph (paper Appendix B)." if ctx.excluding else ""
    colourings = map_colourings(ctx)
    for i, (title, values, kind, names) in enumerate(colourings):
        spec = plots.colour_spec(values, kind, names)
        slug = _slug(title)
        path = plots.scatter_2d(coords[2], spec, f"UMAP of the loss kernel, coloured by {title}",
                                title, ctx.out / f"umap2d_{slug}.png")
        ctx.figure(path, f"UMAP coloured by {title}",
                   f"2-D UMAP of d = sqrt(2(1 - rho)) over {ctx.n} samples "
                   f"({graph.n_neighbors - 1} neighbours each, seed {ctx.cfg.seed}); "
                   f"{ctx.draws} draws.{excl}", "maps")
        if i == 0:
            path = plots.scatter_3d(coords[3], spec, f"3-D UMAP, coloured by {title}", title,
                                    ctx.out / f"umap3d_{slug}.png")
            ctx.figure(path, f"3-D UMAP coloured by {title}",
                       "Three orbit views of the 3-D UMAP with the same graph and seed.", "maps")


def step_convergence(ctx: Context) -> None:
    """CKA over pooled draws, R-hat/ESS across chains, training-loss traces."""
    reader = DrawReader.for_store(ctx.store)
    section: dict[str, Any] = {}
    curve = cka_over_draws(reader, np.asarray(ctx.store.kernel_array("mean")[...]),
                           ctx.cfg.cka_grid, ctx.cfg.cka_max_draws)
    section["cka_over_draws"] = curve
    if curve.get("available"):
        path = plots.cka_curve(curve["s"], curve["cka"], curve["draws"],
                               curve["thinning_stride"], ctx.out / "cka_over_draws.png")
        ctx.figure(path, "Kernel convergence over draws",
                   "CKA between the kernel of the first s draws (pooled over chains, draw-major) "
                   "and the kernel of all of them (paper Appendix D.2 A). A curve that flattens "
                   "near 1 means more draws would barely change the kernel.", "convergence")
    else:
        ctx.skipped["cka_over_draws"] = curve.get("reason", "")
    mix = rhat_ess(reader, seed=ctx.cfg.seed)
    section["rhat_ess"] = summarise_rhat_ess(mix)
    if mix.get("available"):
        path = plots.rhat_ess(mix["rhat"], mix["ess_bulk"], mix["draws"], ctx.out / "rhat_ess.png")
        ctx.figure(path, "Mixing across chains",
                   f"Per-sample split R-hat and bulk effective sample size of the loss over "
                   f"{mix['chains']} chains x {mix['draws_per_chain']} draws (ArviZ)"
                   + (f", for a random subset of {len(mix['samples'])} samples"
                      if mix["subsampled"] else "")
                   + ". R-hat near 1 means the chains agree on that sample's loss distribution.",
                   "convergence")
    else:
        ctx.skipped["rhat_ess"] = mix.get("reason", "")
    burnin = int(ctx.run_config.get("sampler", {}).get("burnin_steps",
                                                       config_default("sampler.burnin_steps")))
    train = ctx.store.train_loss()
    section["train_loss"] = train_loss_health(train, burnin)
    if np.isfinite(train).any():
        path = plots.train_loss_traces(train, burnin, ctx.out / "train_loss.png")
        ctx.figure(path, "Training loss of every chain",
                   "Minibatch training loss at each SGLD step (burn-in shaded). Healthy chains "
                   "rise a little from the trained loss and then fluctuate around one level.",
                   "convergence")
    ctx.metrics["convergence"] = section


def step_memorization(ctx: Context) -> None:
    """AUC of K_ii for a per-sample flag such as 'mislabelled'."""
    name, why = ctx.flag_name, ctx.flag_why
    if name is None:
        ctx.skipped["memorization"] = why
        return
    variance = np.asarray(ctx.store.kernel_array("var")[...])
    flag = np.asarray(ctx.attributes[name])
    result = memorization(variance, flag)
    result.update(attribute=name, chosen=why, draws=ctx.draws)
    ctx.metrics["memorization"] = result
    if result.get("available"):
        path = plots.memorization(variance, flag.astype(int), result["auc"], name,
                                  ctx.out / "memorization.png")
        ctx.figure(path, "Memorization: loss variance of flagged samples",
                   f"Per-sample loss variance K_ii for samples flagged {name!r} and the rest "
                   f"(paper Appendix D.3); {ctx.draws} draws.", "memorization")


def step_taxonomic_lift(ctx: Context) -> None:
    """Lift of shared WordNet ancestors among neighbours of another label."""
    from .wordnet import taxonomic_lift

    if ctx.hierarchy is None:
        ctx.skipped["taxonomic_lift"] = "no label hierarchy"
        return
    if ctx.neighbours is None:
        return  # no correlation neighbour lists; step_neighbours said why
    k = ctx.k
    if ctx.excluding:
        top = ctx.neighbours.top_index[:, :k]
    elif not ctx.dense:
        ctx.skipped["taxonomic_lift"] = (
            "needs each sample's neighbours of another label: the streamed lists were reduced "
            "without same-label exclusion and there is no dense kernel to recompute them")
        return
    else:
        top = compute_neighbours(ctx.corr, k, 0, ctx.labels, exclude_same_label=True).top_index
    lift = taxonomic_lift(ctx.hierarchy, ctx.labels, top)
    lift["draws"] = ctx.draws
    ctx.metrics["taxonomic_lift"] = lift
    path = plots.lift_curves(lift["curves"], k, ctx.out / "taxonomic_lift.png")
    ctx.figure(path, "Taxonomic lift",
               f"For queries whose label is at WordNet depth D, the rate at which their {k} "
               "nearest neighbours of another label share the label's ancestor at depth d, "
               "divided by the base rate among all samples of another label (paper Figure D.1). "
               f"Lift 1 is chance; {ctx.draws} draws.", "lift")


def step_attribute_lift(ctx: Context) -> None:
    """Lift of every discrete attribute (and colour group) among the k neighbours."""
    usable, skipped = discrete_attributes(
        {k: v for k, v in ctx.attributes.items() if k != IMAGE_ATTRIBUTE},
        ctx.labels, ctx.cfg.attribute_max_levels)
    if not usable:
        ctx.skipped["attribute_lift"] = "no discrete attribute (" + (
            "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "the task has none") + ")"
        return
    if ctx.neighbours is None:
        return  # no correlation neighbour lists; step_neighbours said why
    k = ctx.k
    top = ctx.neighbours.top_index[:, :k]
    lifts = {name: attribute_lift(values, top, ctx.labels, ctx.excluding)
             for name, values in usable.items()}
    ctx.metrics["attribute_lift"] = {"k": k, "exclude_same_label": ctx.excluding,
                                     "draws": ctx.draws, "attributes": lifts,
                                     "not_used": skipped}
    if any(v.get("lift") is not None for v in lifts.values()):
        path = plots.attribute_lifts(lifts, ctx.out / "attribute_lift.png")
        ctx.figure(path, "Attribute lift",
                   f"How much more often a sample's {k} nearest neighbours share its attribute "
                   "value than the candidates do on average (paper Appendix D.2 D, D.4); "
                   "1 is chance.", "lift")


def step_thumbnails(ctx: Context) -> None:
    """Reference images with their most and least correlated images."""
    images = ctx.attributes.get(IMAGE_ATTRIBUTE)
    if images is None or ctx.cfg.thumbnails == 0:
        ctx.skipped["thumbnails"] = ("analysis.thumbnails is 0" if images is not None
                                     else "not an image task")
        return
    nb = ctx.neighbours
    if nb is None:
        return  # no correlation neighbour lists; step_neighbours said why
    refs = choose_references(ctx.n, ctx.cfg.thumbnails, ctx.cfg.seed)
    path = thumbnail_grid(images, refs, nb.top_index, nb.top_corr, nb.bottom_index,
                          nb.bottom_corr, ctx.out / "thumbnails.png", k=min(5, ctx.k),
                          label_of=ctx.label_text())
    ctx.figure(path, "Most and least correlated images",
               "Each row: a random reference image, its most correlated images and its least "
               f"correlated images, captioned with rho (paper Figure 3); {ctx.draws} draws.",
               "thumbnails")


# --------------------------------------------------------------------------- summary, json


def summary(ctx: Context) -> dict[str, float | int]:
    """Short name -> number, the CLI prints these."""
    m = ctx.metrics
    out: dict[str, Any] = {"n": ctx.n, "draws": ctx.draws}
    if "guards" in m:
        out["guard_flagged_chains"] = len(m["guards"]["flagged_chains"])
    nb = m.get("neighbours", {})
    out["mean_top1_corr"] = nb.get("mean_top1_corr")
    auc = m.get("groups", {}).get("pc1_auc", {})
    if auc.get("available"):
        out["pc1_auc"] = auc["auc"]
    pairs = m.get("groups", {}).get("covariance_by_pair_type", {})
    if "cross-group" in pairs:
        within = [v for k, v in pairs.items() if k != "cross-group"]
        total = sum(v["count"] for v in within)
        if total:
            out["within_cov_mean"] = sum(v["mean"] * v["count"] for v in within) / total
        out["cross_cov_mean"] = pairs["cross-group"]["mean"]
    conv = m.get("convergence", {})
    curve = conv.get("cka_over_draws", {})
    if curve.get("available"):
        out["cka_half_draws"] = curve["cka_at_half"]
    mix = conv.get("rhat_ess", {})
    if mix.get("available"):
        out["rhat_median"] = mix["rhat_median"]
        out["rhat_max"] = mix["rhat_max"]
        out["ess_bulk_median"] = mix["ess_bulk_median"]
        out["ess_bulk_min"] = mix["ess_bulk_min"]
    train = conv.get("train_loss", {})
    if "max_abs_drift" in train:
        out["train_loss_max_drift"] = train["max_abs_drift"]
    mem = m.get("memorization", {})
    if mem.get("available"):
        out["memorization_auc"] = mem["auc"]
    tax = m.get("taxonomic_lift", {})
    if tax.get("peak_lift") is not None:
        out["taxonomic_lift_peak"] = tax["peak_lift"]
        out["taxonomic_lift_peak_depth"] = tax["peak_depth"]
    attrs = m.get("attribute_lift", {}).get("attributes", {})
    for name, value in attrs.items():
        if value.get("lift") is not None:
            out[f"lift_{name}"] = value["lift"]
    return {k: v for k, v in out.items() if v is not None}


def jsonable(value: Any) -> Any:
    """Plain JSON data: numpy to Python, non-finite floats to None, keys to str."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _nanmean(values: np.ndarray) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")
