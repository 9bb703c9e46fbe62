"""Per-row top-k selection with the exact order of a stable sort.

Both neighbour computations use it: the analysis' blockwise lists over the
dense kernel (``analysis/neighbours.py``) and the streamed top-k reduce over
the draws (``reduction/topk.py``). It lives here, below both, so that the reduce
never imports the analysis layer above it.
"""

from __future__ import annotations

import numpy as np

MISSING = -1  # index of an empty slot (fewer than k candidates); its value is NaN


def select_top(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k largest finite values and their columns, stable-sorted.

    ``values`` is (B, N) float64 in which -inf (or NaN) marks an excluded
    column. Rows are partitioned in O(N) (argpartition); a row whose k-th value
    is tied across the cut is resolved by a full stable sort, so the result
    always equals ``argsort(-row, kind="stable")[:k]`` restricted to finite values.
    Slots beyond a row's finite values hold index ``MISSING`` and NaN.
    """
    values = np.where(np.isnan(values), -np.inf, values)
    b, n = values.shape
    k_eff = min(k, n)
    index = np.full((b, k), MISSING, dtype=np.int64)
    out = np.full((b, k), np.nan, dtype=np.float64)
    if k_eff == 0 or b == 0:
        return index, out
    if k_eff < n:
        part = np.argpartition(-values, k_eff - 1, axis=1)[:, :k_eff]
    else:
        part = np.broadcast_to(np.arange(n), (b, n)).copy()
    pv = np.take_along_axis(values, part, axis=1)
    threshold = pv.min(axis=1)
    ambiguous = (values >= threshold[:, None]).sum(axis=1) > k_eff
    order = np.lexsort((part, -pv), axis=-1)
    sel = np.take_along_axis(part, order, axis=1)
    if ambiguous.any():
        rows = np.flatnonzero(ambiguous)
        sel[rows] = np.argsort(-values[rows], axis=1, kind="stable")[:, :k_eff]
    sel_values = np.take_along_axis(values, sel, axis=1)
    valid = np.isfinite(sel_values)
    index[:, :k_eff] = np.where(valid, sel, MISSING)
    out[:, :k_eff] = np.where(valid, sel_values, np.nan)
    return index, out
