"""Print how well the top principal components of a run's correlation kernel separate its labels.

    python scripts/kernel_pcs.py RUN_DIR

A quick check for pilot runs (dense eigendecomposition: small N only). For each of
the top three eigenvectors of kernel/corr: the ROC-AUC against the binary labels
(oriented, since an eigenvector's sign is arbitrary) and its eigenvalue; then the
mean train loss over the first 20 and last 50 steps, and mean |K| within and across
labels. `losskernel analyze` computes PC1's AUC at scale (analysis/groups.py).
"""

from __future__ import annotations

import sys

import numpy as np
from sklearn.metrics import roc_auc_score

from losskernel_dist.store import RunStore


def main(run: str) -> None:
    store = RunStore.open(f"{run}/store.zarr")
    corr = store.kernel_array("corr")[...]
    values, vectors = np.linalg.eigh(corr)
    labels = store.labels()
    for k in (1, 2, 3):
        auc = roc_auc_score(labels, vectors[:, -k])
        print(f"PC{k} auc {max(auc, 1 - auc):.3f} eig {values[-k]:.1f}")
    train = store.train_loss()
    print("train loss first/last", np.nanmean(train[:, :20]), np.nanmean(train[:, -50:]))
    cov = store.kernel_array("cov")[...]
    same = labels[:, None] == labels[None, :]
    print("within/cross |cov|", np.abs(cov[same]).mean(), np.abs(cov[~same]).mean())


if __name__ == "__main__":
    main(sys.argv[1])
