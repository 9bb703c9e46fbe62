"""Benchmark: the loss kernel of a small language model, devinterp 2.0.1's ``bif`` against ours.

Task: ``examples/text_task.py:build_windows``, the built-in English corpus as one
byte stream cut into windows of ``--seq-len`` tokens (1,211 windows of 16), a
2-layer, width-128 byte-level GPT (0.46 M parameters) trained once at the start
and saved, so every variant starts from the same w*. The kernel is over
``--n-eval`` windows (a seeded subset of the training windows); the loss of a
window is its next-token cross-entropies summed over the ``seq-len - 1`` targets.

Variants, each in a fresh process, threads pinned; every one takes the same SGLD
steps (C chains x (burn-in + T) steps of a b-sequence minibatch) and the same C T
forward passes over the N eval windows, then computes the N x N covariance:

* devinterp: ``devinterp.slt.sampling.sample`` then ``devinterp.slt.bif.compute_bif``
  (what ``bif`` calls), ``correlation_method="sequence"``, ``compute_covariance=True``,
  in the separate venv ``.venv-devinterp`` (``bash bench/devinterp_setup.sh``); it runs
  its chains one after another in one process. 1 thread and ``--threads`` threads.
* plain PyTorch SGLD loop (the floor): the same steps and forward passes with no
  store, no keyed randomness, then ``numpy.cov``.
* ours: ``losskernel_dist.jobs.sample.sample`` then ``reduce_with_config`` (``losskernel sample``
  + ``losskernel reduce``): one process with 1 and ``--threads`` threads; chains
  batched under vmap (``sampler.chains_per_batch``); torchrun --standalone (gloo)
  with R ranks x max(1, threads / R) threads for each R of ``--ranks``.

Every variant runs ``--repeats`` times, the rounds interleaved, each with its load
(``bench/_record.py``'s LoadWatch: foreign CPU per second, ``loaded`` flag); the
fastest round is kept, and the JSON record goes to bench/results/devinterp-*.json.

draws/s = C T / (seconds of sampling + kernel): the sampling call with each tool's own
setup (its store, its losses at w*; ours also loads the task there), then the
kernel; interpreter start and imports are not counted. Under torchrun it is rank 0's
wall time (it waits for every rank at the end, then reduces). "vs devinterp" divides
by devinterp's draws/s at the same thread count (1 for the 1-thread row,
``--threads`` for all others, which use ``--threads`` cores in all).

Kernel agreement, ours and the floor each against devinterp's N x N covariance: CKA
(``losskernel_dist.analysis.cka``), the trace ratio tr(K_a) / tr(K_b), and var_corr,
the Pearson correlation of the two diagonals (per-window loss variances). Two kernels
from independent chains differ by Monte Carlo error, and CKA (which centres the
kernels, removing the shared "every loss moves together" part) is very noisy at
few draws: for M draws and a centred kernel of effective rank r, independent
estimates of one kernel have CKA of about M / (M + r), r = tr(HKH)^2 / ||HKH||_F^2 of
the true kernel. The "rank" columns give that ratio for each estimate; it cannot
exceed M - 1, and a value near M - 1 says the estimate is still mostly noise. So the floor-vs-devinterp row (a third, independent estimate of the same
posterior's kernel) is the level to read ours-vs-devinterp against; ours under
every layout gives the same draws (keyed randomness), hence the same kernel.

SGLD mapping (checked in devinterp 2.0.1's source: ``optim/sgmcmc.py``
``SGMCMC.sgld`` with the identity preconditioner, and ``slt/sampler.py``). devinterp:

    w <- w - lr/2 (n_beta grad(mean over batch AND tokens of the token losses)
                   + localization (w - w0)) + sqrt(lr) N(0, noise_level^2)

ours (docs/MATH.md):

    w <- w - lr/2 (nbeta grad(mean over batch of the summed sequence loss)
                   + localization (w - w*)) + sqrt(lr) N(0, 1)

Same drift factor lr/2, same sqrt(lr) noise (noise_level 1), same localization
(devinterp's GaussianPrior centred at the initial weights = w*), no weight decay.
The one difference is the loss being scaled: devinterp averages over the
``seq_len - 1`` token positions, ours sums them, so ``n_beta = nbeta (seq_len - 1)``
gives both the same target exp(-nbeta L_n(w) - localization/2 ||w - w*||^2). devinterp's
sequence-level BIF is the covariance of the per-token *mean* loss, so its kernel is
multiplied by (seq_len - 1)^2 before comparing (CKA does not care; the trace does).
devinterp runs in ``model.train()`` (the model has no dropout: no difference) and
gets ``loss_fn`` = the same forward as ours (``model(ids[:, :-1])``, cross-entropy
against ``ids[:, 1:]``), so both do identical work per sequence. Other devinterp
settings: ``batch_size`` b (it also evaluates the observable in batches of b: N / b
forward passes per draw; ours and the floor use shards of ``--eval-batch``, by
default the same b, so that all three do the same passes), ``init_seed`` the seed,
``num_init_loss_batches=1`` (its per-chain loss at w*, kept minimal), its defaults
otherwise (per-step token losses and minibatch ids written to its Zarr store,
minibatch order shared by the chains). Its eval order is a seeded shuffle of the
observable; the benchmark maps it back by the returned ``input_ids``.

Default SGLD settings: lr 1e-4, nbeta 30 (devinterp n_beta 450), localization 1e4,
b = 32, a draw every step. w - w* then relaxes by a factor 1 - lr loc / 2 = 0.5 per
step, so consecutive draws are nearly independent and a short run already gives
kernels that agree (with localization 1e3, as in examples/text_task.yaml, draws stay
correlated for ~20 steps and 4 chains x 5 draws gave kernels of effective rank ~4,
CKA ~0.02 between any two tools). The price is an O(lr loc) discretisation bias
against the continuous posterior, the same for every variant: all take the same
discretised step. The minibatch loss rises ~1 nat per window above w*'s ~31 and
stays bounded. Speed does not depend on these settings (the work per step is fixed).

    bash bench/devinterp_setup.sh                    # once: .venv-devinterp
    python bench/devinterp.py                        # N = 1,024, 16 tokens, 4 chains x 20 draws
    python bench/devinterp.py --n-eval 256 --chains 2 --draws 5 --ranks 2   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import BenchRecord, LoadWatch  # noqa: E402
from _util import PLAIN_SGLD_LOOP, run_measured, run_torchrun, table  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TARGET = "examples.text_task:build_windows"
SETUP = "bash bench/devinterp_setup.sh"

TRAIN = """
import json, sys, torch
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
from examples.text_task import build_windows
task = build_windows(**cfg["args"])
torch.save({"hparams": task.model.hparams, "state_dict": task.model.state_dict()}, cfg["out"])
RESULT = {"parameters": sum(p.numel() for p in task.model.parameters()),
          "n_train": len(task.train), "n_eval": len(task.eval)}
"""

FLOOR = """
import json, math, sys, time, torch, numpy as np
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
from examples.text_task import build_windows
s, eval_batch = cfg["sampler"], cfg["eval_batch"]
seed = s["seed"] + 12345
task = build_windows(**cfg["args"])
""" + PLAIN_SGLD_LOOP + """
t1 = time.perf_counter()
kernel = np.cov(out.reshape(-1, out.shape[-1]).astype(np.float64), rowvar=False)
t2 = time.perf_counter()
np.save(cfg["kernel_out"], kernel)
RESULT = {"sample_s": seconds, "kernel_s": t2 - t1, "draws": int(out.shape[0] * out.shape[1])}
"""

DEVINTERP = """
import json, random, sys, time, warnings, torch, numpy as np
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
import torch.nn.functional as F
from datasets import Dataset
from devinterp.slt.bif import compute_bif
from devinterp.slt.sampling import sample
from examples.text_task import build_windows
s = cfg["sampler"]
task = build_windows(**cfg["args"])
train_ids = task.train.tensors[0]
eval_ids = task.eval.tensors[0]
N, L, b = len(eval_ids), eval_ids.shape[1], s["batch_size"]
train_ds = Dataset.from_dict({"input_ids": train_ids.tolist()}).with_format("torch")
eval_ds = Dataset.from_dict({"input_ids": eval_ids.tolist()}).with_format("torch")

def loss_fn(model, input_ids):  # per-token losses (batch, L - 1): the same forward as ours
    logits = model(input_ids[:, :-1])
    return F.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")

warnings.simplefilter("ignore")
t0 = time.perf_counter()
tree = sample(
    model=task.model, dataset=train_ds, observables={"eval": (eval_ds, N // b)},
    lr=s["lr"], n_beta=s["nbeta"] * (L - 1), localization=s["localization"],
    num_chains=s["chains"], num_draws=s["draws"], batch_size=b,
    num_burnin_steps=s["burnin_steps"], num_steps_bw_draws=s["steps_between_draws"],
    num_init_loss_batches=1, init_seed=s["seed"], device="cpu",
    output_path=cfg["store"], loss_fn=loss_fn,
)
t1 = time.perf_counter()
res = compute_bif(tree, correlation_method="sequence", compute_covariance=True, device="cpu")
t2 = time.perf_counter()
k = np.asarray(res["influences"].values, dtype=np.float64) * (L - 1) ** 2
ids = np.asarray(res["input_ids"].values)
perm = random.Random(1337).sample(range(N), N)  # devinterp's DeterministicShuffledSampler
assert (ids == eval_ids.numpy()[perm]).all(), "devinterp's eval order is not the expected shuffle"
kernel = np.empty_like(k)
kernel[np.ix_(perm, perm)] = k
np.save(cfg["kernel_out"], kernel)
draws = int(np.isfinite(tree.dataset["loss_eval"].values).all(axis=(2, 3)).sum())
RESULT = {"sample_s": t1 - t0, "kernel_s": t2 - t1, "draws": draws}
"""

OURS = """
import json, os, sys, time
import numpy as np
from losskernel_dist.config import load_config
from losskernel_dist.reduction.dispatch import reduce_with_config
from losskernel_dist.jobs.sample import sample
from losskernel_dist.rundir import RunDir
config = load_config(sys.argv[1], sys.argv[3:])
t0 = time.perf_counter()
report = sample(config, progress=False)
t1 = time.perf_counter()
RESULT = {"sample_s": t1 - t0, "draws": report.draws_written}
if int(os.environ.get("RANK", "0")) == 0:
    reduce_with_config(RunDir(config.run_dir).open_store(mode="r+"), config)
    RESULT["kernel_s"] = time.perf_counter() - t1
    np.save(sys.argv[2], RunDir(config.run_dir).open_store().kernel_array("cov")[...])
"""


def ours_ranks(config_path: Path, kernel_out: Path, ranks: int, threads: int, env: dict) -> dict:
    """Ours under torchrun: wall time of rank 0 (it waits for every rank, then reduces)."""
    rows = run_torchrun(OURS, config_path.parent, ranks, threads, str(config_path),
                        str(kernel_out), f"sampler.threads={threads}", env=env)
    main = next(r for r in rows if "kernel_s" in r)
    return {"sample_s": max(r["sample_s"] for r in rows), "kernel_s": main["kernel_s"],
            "draws": sum(r["draws"] for r in rows), "peak_rss": None}


def centred_rank(k: np.ndarray) -> float:
    """Effective rank tr(HKH)^2 / ||HKH||_F^2 of the centred kernel."""
    kc = k - k.mean(axis=0) - k.mean(axis=1)[:, None] + k.mean()
    return float(np.trace(kc) ** 2 / np.einsum("ij,ij->", kc, kc))


def agreement(k: np.ndarray, ref: np.ndarray) -> dict:
    from losskernel_dist.analysis.cka import cka

    return {"rank": centred_rank(k), "ref_rank": centred_rank(ref),"cka": cka(k, ref), "trace_ratio": float(np.trace(k) / np.trace(ref)),
            "var_corr": float(np.corrcoef(np.diag(k), np.diag(ref))[0, 1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-eval", type=int, default=1024, help="N: eval windows (<= 1,211 at 16)")
    ap.add_argument("--seq-len", type=int, default=16, help="tokens per window")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=200, help="Adam steps that make w*")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--draws", type=int, default=20, help="kept draws per chain")
    ap.add_argument("--burnin", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32, help="SGLD minibatch b (divides N)")
    ap.add_argument("--eval-batch", type=int, default=0,
                    help="eval shard of ours and the floor (0: devinterp's, i.e. --batch-size)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--nbeta", type=float, default=30.0,
                    help="ours; devinterp gets n_beta = nbeta * (seq_len - 1)")
    ap.add_argument("--localization", type=float, default=10000.0)
    ap.add_argument("--threads", type=int, default=2, help="cores to use (the T of the variants)")
    ap.add_argument("--ranks", default="1,2,4", help="torchrun rank counts, comma-separated ('' none)")
    ap.add_argument("--batch-chains", type=int, default=0, help="chains per vmap batch (0: all)")
    ap.add_argument("--variants", default="devinterp,floor,ours,batched,ranks",
                    help="which variants to run, comma-separated")
    ap.add_argument("--repeats", type=int, default=1,
                    help="interleaved rounds of all variants; each variant's fastest is kept")
    ap.add_argument("--devinterp-python", default=str(REPO / ".venv-devinterp" / "bin" / "python"))
    args = ap.parse_args()
    record = BenchRecord("devinterp", vars(args))
    # like for like: devinterp evaluates its observable in minibatches of b, so ours does too
    args.eval_batch = args.eval_batch or args.batch_size
    variants = {v.strip() for v in args.variants.split(",") if v.strip()}
    unknown = variants - {"devinterp", "floor", "ours", "batched", "ranks"}
    if unknown:
        sys.exit(f"bench/devinterp.py: unknown --variants {sorted(unknown)}")

    if "devinterp" in variants and not Path(args.devinterp_python).is_file():
        sys.exit(f"bench/devinterp.py: no devinterp interpreter at {args.devinterp_python}; "
                 f"create the venv with '{SETUP}' (devinterp 2.0.1 beside torch 2.13.0) "
                 "or pass --devinterp-python")
    if args.n_eval % args.batch_size:
        sys.exit(f"bench/devinterp.py: --n-eval {args.n_eval} must be a multiple of --batch-size "
                 f"{args.batch_size} (devinterp evaluates its observable in whole batches)")
    threads = args.threads
    sampler = {"chains": args.chains, "draws": args.draws, "burnin_steps": args.burnin,
               "steps_between_draws": 1, "batch_size": args.batch_size, "lr": args.lr,
               "nbeta": args.nbeta, "localization": args.localization, "seed": 0,
               "checkpoint_every": 0, "device": "cpu"}
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    root = Path(tempfile.mkdtemp(prefix="bench_devinterp_"))
    rows: list[dict] = []
    rounds: dict[str, list[dict]] = {}
    kernels: dict[str, np.ndarray] = {}
    try:
        checkpoint = root / "model.pt"
        info = run_measured(TRAIN, json.dumps({
            "threads": threads, "out": str(checkpoint),
            "args": {"seq_len": args.seq_len, "n_eval": args.n_eval, "width": args.width,
                     "layers": args.layers, "train_steps": args.train_steps}}), env=env)
        task_args = {"checkpoint": str(checkpoint), "seq_len": args.seq_len,
                     "n_eval": args.n_eval}

        def child_cfg(name: str, t: int) -> str:
            shutil.rmtree(root / f"{name}.zarr", ignore_errors=True)  # each round from scratch
            return json.dumps({"threads": t, "args": task_args, "sampler": sampler,
                               "eval_batch": args.eval_batch,
                               "store": str(root / f"{name}.zarr"),
                               "kernel_out": str(root / f"{name}.npy")})

        def config(name: str, t: int, **extra) -> Path:
            shutil.rmtree(root / name, ignore_errors=True)  # each round samples from scratch
            data = {"task": {"target": TARGET, "args": task_args},
                    "sampler": {**sampler, "threads": t, **extra},
                    "eval": {"batch_size": args.eval_batch},
                    "reduce": {"threads": threads, "engine": "dask"},
                    "analysis": {"enabled": False}, "output": str(root / name)}
            path = root / f"{name}.yaml"
            path.write_text(yaml.safe_dump(data))
            return path

        watch = [LoadWatch()]  # the current variant's, started just before it runs

        def run_round(first: bool) -> None:
            """One round of every variant; skips and failures are noted in the first only."""
            for t in sorted({1, threads}) if "devinterp" in variants else []:
                env_t = {**env, "OMP_NUM_THREADS": str(t)}
                watch[0] = LoadWatch()
                res = run_measured(DEVINTERP, child_cfg(f"devinterp{t}", t), env=env_t,
                                   python=args.devinterp_python)
                add(f"devinterp{t}", f"devinterp 2.0.1 bif ({t} thread{'s' * (t > 1)})", t, res, t)
            if "floor" in variants:
                watch[0] = LoadWatch()
                res = run_measured(FLOOR, child_cfg("floor", threads),
                                   env={**env, "OMP_NUM_THREADS": str(threads)})
                add("floor", f"plain PyTorch SGLD loop + numpy.cov ({threads} thread"
                    f"{'s' * (threads > 1)})", threads, res, threads)

            for t in sorted({1, threads}) if "ours" in variants else []:
                name = f"ours{t}"
                watch[0] = LoadWatch()
                res = run_measured(OURS, str(config(name, t)), str(root / f"{name}.npy"),
                                   env={**env, "OMP_NUM_THREADS": str(t)})
                add(name, f"ours, one process, chain by chain ({t} thread{'s' * (t > 1)})", t, res, t)
            batch = args.batch_chains or args.chains
            if "batched" in variants:
                try:
                    watch[0] = LoadWatch()
                    res = run_measured(OURS, str(config("batched", threads, chains_per_batch=batch)),
                                       str(root / "batched.npy"),
                                       env={**env, "OMP_NUM_THREADS": str(threads)})
                    add("batched", f"ours, {batch} chains batched under vmap ({threads} thread"
                        f"{'s' * (threads > 1)})", threads, res, threads)
                except RuntimeError as exc:
                    if first:
                        rows.append({"variant": "batched chains failed: "
                                     f"{str(exc).splitlines()[-1]}"})
            rank_counts = [int(r) for r in args.ranks.split(",") if r.strip()]
            for ranks in rank_counts if "ranks" in variants else []:
                if ranks > args.chains:
                    if first:
                        rows.append({"variant": f"torchrun {ranks} ranks skipped: only "
                                     f"{args.chains} chains (a rank runs whole chains)"})
                    continue
                per = max(1, threads // ranks)
                name = f"ranks{ranks}"
                watch[0] = LoadWatch()
                res = ours_ranks(config(name, per), root / f"{name}.npy", ranks, per, env)
                add(name, f"ours, torchrun {ranks} rank{'s' * (ranks > 1)} x {per} thread"
                    f"{'s' * (per > 1)}", ranks * per, res, threads)

        def add(name: str, variant: str, cores: int, res: dict, ref_threads: int) -> None:
            load = watch[0].stop()
            rounds.setdefault(name, []).append({"name": name, "variant": variant, "cores": cores,
                                                "ref_threads": ref_threads, **res, "load": load})
            kernels[name] = np.load(root / f"{name}.npy")

        for rnd in range(args.repeats):  # interleaved: a burst of load hits every variant
            run_round(rnd == 0)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    for results in rounds.values():
        best = min(results, key=lambda r: r["sample_s"] + r["kernel_s"])
        rows.append({**best, "rounds": [{"seconds": r["sample_s"] + r["kernel_s"], **r["load"]}
                                        for r in results],
                     "loaded_rounds": sum(r["load"]["loaded"] for r in results)})

    by_name = {r["name"]: r for r in rows if "name" in r}
    for r in by_name.values():
        r["seconds"] = r["sample_s"] + r["kernel_s"]
        r["draws_per_s"] = r["draws"] / r["seconds"]
    floor = by_name.get("floor")
    for r in by_name.values():
        ref = by_name.get(f"devinterp{r['ref_threads']}")
        r["vs_devinterp"] = r["draws_per_s"] / ref["draws_per_s"] if ref else None
        r["vs_floor"] = r["draws_per_s"] / floor["draws_per_s"] if floor else None
    ref_name = f"devinterp{threads}"
    agree = []
    for name, k in kernels.items():
        if name != ref_name and ref_name in kernels:
            agree.append({"kernel": name, "vs": ref_name, **agreement(k, kernels[ref_name])})
    ours_name = next((n for n in ("ours1", f"ours{threads}") if n in kernels), None)
    if ours_name and "floor" in kernels:
        agree.append({"kernel": ours_name, "vs": "floor",
                      **agreement(kernels[ours_name], kernels["floor"])})

    print(f"N = {args.n_eval} windows of {args.seq_len} tokens, {info['parameters']} parameters, "
          f"{args.chains} chains x {args.draws} draws (+{args.burnin} burn-in), b = "
          f"{args.batch_size}, eval shard {args.eval_batch}, lr {args.lr:g}, nbeta {args.nbeta:g} (devinterp n_beta "
          f"{args.nbeta * (args.seq_len - 1):g}), localization {args.localization:g}; "
          f"load average at the end {os.getloadavg()[0]:.2f}")
    print(table(rows, ["variant", "cores", "draws", "sample_s", "kernel_s", "draws_per_s",
                       "vs_devinterp", "vs_floor"]))
    print()
    print(table(agree, ["kernel", "vs", "cka", "trace_ratio", "var_corr", "rank",
                        "ref_rank"]))
    print(record.write({"parameters": info["parameters"], "rows": rows, "agreement": agree}))

if __name__ == "__main__":
    main()
