"""Is the kernel converged, and are the chains healthy?

* ``cka_over_draws``: CKA(K_s, K_final) for s on a grid of pooled draw counts
  (paper Appendix D.2 A). The first s draws are taken draw-major across chains
  (every chain's draw 0, then draw 1, ...), so s counts total draws over all
  chains as in the paper. Neither K_s nor K_final is formed: with X the (M, N)
  draws, W = (X - mean) H (each draw centred over the samples) and
  P_s the centring over s draws,

      <H K_s H, H K_M H> ~ ||P_s G[:s, :] P_M||_F^2,   ||H K_s H||^2 ~ ||P_s G[:s, :s] P_s||_F^2,

  where G = W W^T is the M x M Gram matrix of the draws, accumulated over
  column blocks of samples (the 1/(s-1) factors cancel in CKA). Memory is
  M^2 floats; above ``max_draws`` pooled draws every chain is thinned evenly
  and the curve is stated to rest on the thinned draws.
* ``rhat_ess``: rank-normalised split R-hat and bulk/tail effective sample
  size of every sample's loss across chains (ArviZ), over sample blocks.
* ``train_loss_health``: per-chain summaries of the minibatch training loss
  recorded at every SGLD step.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .cka import double_centred_sq_norm
from .kernelio import DrawReader

RHAT_MAX_SAMPLES = 5000  # above this many samples, R-hat/ESS are evaluated on a random subset


def draw_gram(reader: DrawReader, rows: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """G = W W^T for W = (X[rows] - centre) H, accumulated over sample blocks (M x M)."""
    m = len(rows)
    g = np.zeros((m, m))
    r = np.zeros(m)
    block = reader.column_block(reader.chains * reader.draws_per_chain)
    for j0 in range(0, reader.n, block):
        j1 = min(j0 + block, reader.n)
        xb = reader.flat_columns(rows, j0, j1) - centre[j0:j1]
        g += xb @ xb.T
        r += xb.sum(axis=1)
    return g - np.outer(r, r) / reader.n


def draw_grid(m: int, points: int) -> list[int]:
    """About ``points`` evenly spaced pooled draw counts in 2..m, always ending at m."""
    grid = np.unique(np.round(np.linspace(m / points, m, points)).astype(int))
    return [int(s) for s in grid if s >= 2]


def cka_curve_from_gram(g: np.ndarray, grid: list[int]) -> list[float]:
    """CKA(K_s, K_M) for each s in ``grid`` from the draws' Gram matrix (see module doc)."""
    full = double_centred_sq_norm(g)
    out = []
    for s in grid:
        num = double_centred_sq_norm(g[:s, :])
        den = double_centred_sq_norm(g[:s, :s])
        value = num / np.sqrt(den * full) if den > 0 and full > 0 else float("nan")
        out.append(float(value))
    return out


def thinning_stride(reader: DrawReader, max_draws: int) -> int:
    """Smallest per-chain stride that brings the pooled usable draws to <= max_draws."""
    stride = 1
    while int(reader.mask[:, ::stride].sum()) > max_draws:
        stride += 1
    return stride


def cka_over_draws(
    reader: DrawReader, centre: np.ndarray, points: int = 12, max_draws: int = 8192
) -> dict[str, Any]:
    """The convergence curve CKA(K_s, K_final) over pooled draw counts s."""
    stride = thinning_stride(reader, max_draws)
    mask = np.zeros_like(reader.mask)
    mask[:, ::stride] = reader.mask[:, ::stride]
    thinned = DrawReader(reader.store, mask)
    rows = thinned.order()
    m = len(rows)
    if m < 3:
        return {"available": False, "reason": f"only {m} usable draws", "draws": m}
    g = draw_gram(thinned, rows, centre)
    grid = draw_grid(m, points)
    values = cka_curve_from_gram(g, grid)
    return {
        "available": True,
        "draws": m,
        "thinning_stride": stride,
        "order": "draw-major across chains (s counts draws over all chains)",
        "s": grid,
        "cka": values,
        "cka_at_half": _at_fraction(grid, values, 0.5),
    }


def _at_fraction(grid: list[int], values: list[float], fraction: float) -> float | None:
    """The curve's value at the grid point nearest ``fraction`` of the draws."""
    if not grid:
        return None
    target = fraction * grid[-1]
    i = int(np.argmin([abs(s - target) for s in grid]))
    return values[i]


def rhat_ess(reader: DrawReader, max_samples: int = RHAT_MAX_SAMPLES,
             seed: int = 0) -> dict[str, Any]:
    """Split R-hat and bulk/tail ESS of each sample's loss over complete chains (ArviZ).

    ArviZ evaluates the diagnostics one sample at a time (milliseconds each),
    so above ``max_samples`` samples a seeded uniform subset of that many is
    evaluated; ``samples`` lists which, and the summary says so.
    """
    import arviz as az

    chains = reader.complete_chains()
    n = reader.n
    if len(chains) < 2:
        return {
            "available": False,
            "reason": f"R-hat needs at least 2 complete chains, the run has {len(chains)}",
            "chains": len(chains),
        }
    if n > max_samples:
        samples = np.sort(np.random.default_rng(seed).choice(n, max_samples, replace=False))
    else:
        samples = np.arange(n)
    t = reader.draws_per_chain
    rhat = np.empty(len(samples))
    ess_bulk = np.empty(len(samples))
    ess_tail = np.empty(len(samples))
    block = reader.column_block(reader.chains * t * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j0 in range(0, n, block):
            j1 = min(j0 + block, n)
            lo, hi = np.searchsorted(samples, [j0, j1])
            if lo == hi:
                continue
            x = reader.columns(j0, j1)[chains][:, :, samples[lo:hi] - j0]
            ds = az.convert_to_dataset({"loss": x})
            rhat[lo:hi] = az.rhat(ds)["loss"].values
            ess_bulk[lo:hi] = az.ess(ds, method="bulk")["loss"].values
            ess_tail[lo:hi] = az.ess(ds, method="tail")["loss"].values
    return {
        "available": True,
        "method": "ArviZ rank-normalised split R-hat; bulk and tail ESS",
        "chains": len(chains),
        "draws_per_chain": t,
        "draws": len(chains) * t,
        "samples": samples,
        "subsampled": bool(len(samples) < n),
        "rhat": rhat,
        "ess_bulk": ess_bulk,
        "ess_tail": ess_tail,
    }


def summarise_rhat_ess(result: dict[str, Any], worst: int = 5) -> dict[str, Any]:
    """Median and worst samples of R-hat and ESS, as plain numbers for metrics.json."""
    if not result.get("available"):
        return {k: v for k, v in result.items()}
    rhat, bulk, tail = result["rhat"], result["ess_bulk"], result["ess_tail"]
    ids = result["samples"]
    finite = np.isfinite(rhat)
    order = np.argsort(np.where(finite, -rhat, np.inf), kind="stable")[:worst]
    low_ess = np.argsort(np.where(np.isfinite(bulk), bulk, np.inf), kind="stable")[:worst]
    return {
        "available": True,
        "method": result["method"],
        "chains": result["chains"],
        "draws": result["draws"],
        "samples_evaluated": int(len(ids)),
        "subsampled": result["subsampled"],
        "samples_with_rhat": int(finite.sum()),
        "rhat_median": _nanstat(np.nanmedian, rhat),
        "rhat_max": _nanstat(np.nanmax, rhat),
        "rhat_fraction_above_1.01": float(np.mean(rhat[finite] > 1.01)) if finite.any() else None,
        "rhat_fraction_above_1.1": float(np.mean(rhat[finite] > 1.1)) if finite.any() else None,
        "ess_bulk_median": _nanstat(np.nanmedian, bulk),
        "ess_bulk_min": _nanstat(np.nanmin, bulk),
        "ess_tail_median": _nanstat(np.nanmedian, tail),
        "ess_tail_min": _nanstat(np.nanmin, tail),
        "worst_rhat_samples": [
            {"sample": int(ids[j]), "rhat": float(rhat[j]), "ess_bulk": float(bulk[j])}
            for j in order if finite[j]
        ],
        "lowest_ess_samples": [
            {"sample": int(ids[j]), "ess_bulk": float(bulk[j]), "rhat": float(rhat[j])}
            for j in low_ess if np.isfinite(bulk[j])
        ],
        "note": "samples with constant loss (zero variance) have no R-hat and are left out"
        + (f"; evaluated on a seeded random subset of {len(ids)} samples" if result["subsampled"]
           else ""),
    }


def _nanstat(fn, values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(fn(values)) if values.size else None


def train_loss_health(train_loss: np.ndarray, burnin_steps: int) -> dict[str, Any]:
    """Per-chain summaries of the recorded minibatch loss, before and after burn-in.

    ``drift`` is (mean of the last quarter - mean of the first quarter) of the
    sampling phase in units of the chain's own sampling-phase standard
    deviation: a healthy stationary chain stays within a few units; a chain
    still descending or climbing away from w* shows a large value.
    """
    chains = []
    for c, row in enumerate(np.asarray(train_loss, dtype=np.float64)):
        recorded = np.isfinite(row)
        sampling = row[burnin_steps:]
        sampling = sampling[np.isfinite(sampling)]
        entry: dict[str, Any] = {
            "chain": c,
            "steps_recorded": int(recorded.sum()),
            "initial": float(row[recorded][0]) if recorded.any() else None,
            "final": float(row[recorded][-1]) if recorded.any() else None,
        }
        if sampling.size >= 8:
            q = sampling.size // 4
            sd = float(sampling.std())
            entry.update(
                sampling_mean=float(sampling.mean()),
                sampling_std=sd,
                drift=float((sampling[-q:].mean() - sampling[:q].mean()) / sd) if sd > 0 else 0.0,
            )
        chains.append(entry)
    means = [c["sampling_mean"] for c in chains if "sampling_mean" in c]
    sds = [c["sampling_std"] for c in chains if "sampling_std" in c]
    summary: dict[str, Any] = {"burnin_steps": int(burnin_steps), "chains": chains}
    if means:
        pooled = float(np.sqrt(np.mean(np.square(sds)))) if sds else 0.0
        spread = float(np.max(np.abs(np.array(means) - np.median(means))))
        summary.update(
            sampling_mean_median=float(np.median(means)),
            between_chain_spread=spread / pooled if pooled > 0 else 0.0,
            max_abs_drift=float(max(abs(c.get("drift", 0.0)) for c in chains)),
        )
    return summary
