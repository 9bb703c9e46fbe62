"""Memorization (paper Appendix D.3): does a sample's loss variance K_ii flag it?

Memorized samples (e.g. mislabelled training samples) sit in a sharper basin,
so their loss varies more under the probe distribution. Given a per-sample 0/1
flag, this reports the ROC-AUC of K_ii as a score for the flag (scikit-learn's
``roc_auc_score``; 1 means every flagged sample has a larger variance than every
clean one, 0.5 chance) and the mean K_ii of each group (the paper's 2.138 for
mislabelled against 1.112 for clean).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def resolve_flag(
    requested: str, attributes: Mapping[str, np.ndarray]
) -> tuple[str | None, str]:
    """The attribute to use as the memorization flag, and why."""
    if requested:
        if requested not in attributes:
            known = ", ".join(sorted(attributes)) or "none"
            raise ValueError(
                f"analysis.memorization_attribute: no attribute {requested!r} (attributes: {known})"
            )
        return requested, f"attribute {requested!r} (requested)"
    if "mislabelled" in attributes:
        return "mislabelled", "attribute 'mislabelled' (present in the task)"
    return None, "no memorization flag: the task has no 'mislabelled' attribute"


def memorization(variance: np.ndarray, flag: np.ndarray) -> dict[str, Any]:
    """AUC of K_ii for the flag, and K_ii's mean and median in each group."""
    from sklearn.metrics import roc_auc_score

    variance = np.asarray(variance, dtype=np.float64)
    flag = np.asarray(flag)
    if flag.ndim != 1 or flag.shape != variance.shape:
        raise ValueError(f"flag has shape {flag.shape}, expected {variance.shape}")
    values = np.unique(flag)
    if not set(values.tolist()) <= {0, 1}:
        raise ValueError(f"memorization flag must be 0/1, got values {values[:5].tolist()}")
    flagged = flag.astype(bool)
    out: dict[str, Any] = {
        "flagged": int(flagged.sum()),
        "clean": int((~flagged).sum()),
    }
    if flagged.all() or not flagged.any():
        out.update(available=False, reason="the flag does not take both values")
        return out
    out.update(
        available=True,
        auc=float(roc_auc_score(flagged, variance)),
        mean_var_flagged=float(variance[flagged].mean()),
        mean_var_clean=float(variance[~flagged].mean()),
        median_var_flagged=float(np.median(variance[flagged])),
        median_var_clean=float(np.median(variance[~flagged])),
    )
    return out
