"""``losskernel compare RUN_A RUN_B``: how alike are two runs' kernels over the same samples?

The main number is CKA (cka.py) between the two covariance kernels, and
between the two correlation kernels (paper Appendix D.2 B compares kernels
sampled at different localizations this way). Two kernels are only comparable
over the same evaluation samples in the same order, so runs whose N differs,
or whose eval-set fingerprints differ or are missing, are refused. Different
models are allowed (e.g. checkpoints along training) and reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import get_dotted
from ..errors import CompareError
from ..rundir import RunDir
from ..store import RunStore
from .cka import cka

COMPARED_KEYS = ("sampler.lr", "sampler.nbeta", "sampler.localization", "sampler.chains",
                 "sampler.draws", "sampler.burnin_steps", "sampler.batch_size", "sampler.seed",
                 "task.target", "task.args")



def _open(run_dir: Path) -> RunStore:
    if not RunDir(run_dir).has_store():
        raise CompareError(f"{str(run_dir)!r} is not a run directory (no store): give the "
                           "output directories of two reduced runs")
    store = RunDir(run_dir).open_store()
    if not store.has_kernel():
        raise CompareError(f"run {str(run_dir)!r} has no kernel: run 'losskernel reduce' first")
    return store


def check_comparable(a: RunStore, b: RunStore, run_a: Path, run_b: Path) -> None:
    """Refuse runs over different (or unverifiable) evaluation samples."""
    na, nb = a.shape[2], b.shape[2]
    if na != nb:
        raise CompareError(f"runs have different numbers of samples: {run_a} has N={na}, "
                           f"{run_b} has N={nb}")
    fa = a.fingerprints.get("eval_set")
    fb = b.fingerprints.get("eval_set")
    if fa is None or fb is None:
        missing = run_a if fa is None else run_b
        raise CompareError(f"run {str(missing)!r} records no eval-set fingerprint: cannot verify "
                           "that both kernels are over the same samples")
    if fa != fb:
        raise CompareError(f"runs are over different eval sets (fingerprints {fa[:12]} and "
                           f"{fb[:12]}): their kernels do not describe the same samples")


def neighbour_overlap(a: RunStore, b: RunStore) -> dict[str, Any] | None:
    """Mean fraction of shared top-k neighbours, when both runs stored comparable lists."""
    if not (a.has_neighbours() and b.has_neighbours()):
        return None
    na, nb = a.read_neighbours(), b.read_neighbours()
    if bool(na["attrs"].get("exclude_same_label")) != bool(nb["attrs"].get("exclude_same_label")):
        return None
    k = int(min(na["attrs"].get("k", na["top_index"].shape[1]),
                nb["attrs"].get("k", nb["top_index"].shape[1])))
    ta, tb = na["top_index"][:, :k], nb["top_index"][:, :k]
    shared = [len(set(x[x >= 0]) & set(y[y >= 0])) / k for x, y in zip(ta, tb, strict=True)]
    return {"k": k, "mean_shared_fraction": float(np.mean(shared)),
            "exclude_same_label": bool(na["attrs"].get("exclude_same_label"))}


def compare_runs(run_a: Path, run_b: Path) -> dict[str, Any]:
    """CKA of the two runs' kernels and what differs between the runs."""
    run_a, run_b = Path(run_a), Path(run_b)
    a, b = _open(run_a), _open(run_b)
    check_comparable(a, b, run_a, run_b)
    ca, cb = RunDir(run_a).read_config_dict(), RunDir(run_b).read_config_dict()
    var_a = np.asarray(a.kernel_array("var")[...])
    var_b = np.asarray(b.kernel_array("var")[...])
    ok = (var_a > 0) & (var_b > 0)
    result: dict[str, Any] = {
        "run_a": str(run_a),
        "run_b": str(run_b),
        "n": a.shape[2],
        "draws_a": a.draws_used,
        "draws_b": b.draws_used,
        "cka_cov": cka(a.kernel_array("cov"), b.kernel_array("cov")),
        "cka_corr": cka(a.kernel_array("corr"), b.kernel_array("corr")),
        "variance_log_corr": float(np.corrcoef(np.log(var_a[ok]), np.log(var_b[ok]))[0, 1])
        if ok.sum() > 2 else None,
        "trace_ratio_b_over_a": float(var_b.sum() / var_a.sum()) if var_a.sum() > 0 else None,
        "same_model": a.fingerprints.get("model")
        == b.fingerprints.get("model"),
        "differing_config": {
            key: [get_dotted(ca, key), get_dotted(cb, key)]
            for key in COMPARED_KEYS if get_dotted(ca, key) != get_dotted(cb, key)
        },
    }
    overlap = neighbour_overlap(a, b)
    if overlap is not None:
        result["neighbour_overlap"] = overlap
    return result
