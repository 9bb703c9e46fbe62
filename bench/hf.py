"""Benchmark: the Hugging Face task's sampling speed against a plain PyTorch SGLD loop (and
devinterp 2.0.1, when its venv exists), on the same model, data and cores.

The model is a 2-layer GPT-2 built with ``transformers`` (``--width``, a byte-level
BPE of ``--vocab`` tokens trained with ``tokenizers``; tests/hf_helpers.py), briefly
trained on the generated corpus and saved with ``save_pretrained``; the data are
``--n`` texts cut to ``--seq-len`` tokens, the same file for training and eval.
Every variant takes the same C x (burn-in + T) SGLD steps of a b-sequence minibatch
and the same C T forward passes over the N eval sequences; none computes a kernel.

* ``plain``: ``losskernel_dist.tasks.hf:causal_lm`` builds the task, then the plain
  loop of bench/_util.py (module parameters updated in place, one torch generator,
  no store, no keys, no checkpoints) runs it: the floor.
* ``ours``: ``losskernel sample`` (``jobs.sample.sample``) of a config with that task,
  one process, chain by chain, ``--threads`` threads.
* ``ours_2ranks``: the same under torchrun, 2 ranks x ``--threads``/2 threads.
* ``devinterp``: ``devinterp.slt.sampling.sample`` in ``.venv-devinterp`` (made by
  ``bash bench/devinterp_setup.sh``) with the same model and ``n_beta = nbeta
  (seq_len - 1)`` (devinterp averages token losses, ours sums them per sequence),
  observable batches of b. Skipped (and said so) when that venv is missing.

Each variant runs in a fresh process; ``--rounds`` rounds are interleaved (plain,
ours, ..., then again), so that other work on the machine hits all of them alike,
and the load is recorded around every run. Times: ``wall`` is the child process
from the outside (interpreter start to exit: imports, task build, sampling);
``loop`` the chain loop alone; the CPU times are the child's (torchrun: all ranks).
Ratios divide draws per second of wall time (best round of each).

    python bench/hf.py                                  # N 1,024 x 16 tokens, 4 x 100 draws
    python bench/hf.py --eval-batch 32,256 --rounds 3
    python bench/hf.py --n 128 --draws 5 --rounds 1 --variants plain,ours   # a quick check

Writes bench/results/hf-<time>.json and prints the result as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from _record import BenchRecord, LoadWatch  # noqa: E402
from _util import PLAIN_SGLD_LOOP, run_measured, run_torchrun, table  # noqa: E402

TARGET = "losskernel_dist.tasks.hf:causal_lm"
VARIANTS = ("plain", "ours", "ours_2ranks", "devinterp")

CPU = """
import resource
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return {"user_s": u.ru_utime, "system_s": u.ru_stime, "minor_faults": u.ru_minflt}
"""

PLAIN = """
import json, math, sys, time
t_start = time.perf_counter()
import numpy as np, torch
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
from losskernel_dist.task import load_task
import losskernel_dist.tasks.hf, transformers, datasets  # imported by the task anyway
t_imported = time.perf_counter()
task = load_task(cfg["target"], cfg["args"])
t_built = time.perf_counter()
s, eval_batch, seed = cfg["sampler"], cfg["eval_batch"], 0
""" + PLAIN_SGLD_LOOP + CPU + """
RESULT = {"imports_s": t_imported - t_start, "setup_s": t_built - t_imported, "loop_s": seconds,
          "draws": int(out.shape[0] * out.shape[1]), **cpu()}
"""

OURS = """
import json, sys, time
t0 = time.perf_counter()
from losskernel_dist.config import load_config
from losskernel_dist.jobs.sample import sample
import losskernel_dist.tasks.hf, transformers, datasets  # imported by the task anyway
config = load_config(sys.argv[1], sys.argv[2:])
t1 = time.perf_counter()
report = sample(config, progress=False)
t2 = time.perf_counter()
""" + CPU + """
RESULT = {"imports_s": t1 - t0, "setup_s": (t2 - t1) - report.seconds, "loop_s": report.seconds,
          "draws": report.draws_written, **cpu()}
"""

DEVINTERP = """
import json, sys, time, warnings
t0 = time.perf_counter()
import torch
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
import torch.nn.functional as F
from datasets import Dataset
from devinterp.slt.sampling import sample
from transformers import AutoModelForCausalLM, AutoTokenizer
t1 = time.perf_counter()
s = cfg["sampler"]
model = AutoModelForCausalLM.from_pretrained(cfg["model"]).eval()
model.config.use_cache = False
tok = AutoTokenizer.from_pretrained(cfg["model"])
texts = [json.loads(line)["text"] for line in open(cfg["data"])]
ids = tok(texts, truncation=True, max_length=cfg["seq_len"])["input_ids"]
assert all(len(x) == cfg["seq_len"] for x in ids), "every text must fill seq_len tokens"
data = Dataset.from_dict({"input_ids": ids}).with_format("torch")
N, L, b = len(ids), cfg["seq_len"], s["batch_size"]

def loss_fn(model, input_ids):  # per-token losses (batch, L - 1): the same forward as ours
    logits = model(input_ids=input_ids, use_cache=False).logits[:, :-1]
    return F.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")

warnings.simplefilter("ignore")
t2 = time.perf_counter()
tree = sample(model=model, dataset=data, observables={"eval": (data, N // b)},
              lr=s["lr"], n_beta=s["nbeta"] * (L - 1), localization=s["localization"],
              num_chains=s["chains"], num_draws=s["draws"], batch_size=b,
              num_burnin_steps=s["burnin_steps"], num_steps_bw_draws=1,
              num_init_loss_batches=1, init_seed=0, device="cpu",
              output_path=cfg["store"], loss_fn=loss_fn)
t3 = time.perf_counter()
""" + CPU + """
RESULT = {"imports_s": t1 - t0, "setup_s": t2 - t1, "loop_s": t3 - t2,
          "draws": s["chains"] * s["draws"], **cpu()}
"""


def build_inputs(root: Path, args: argparse.Namespace) -> dict:
    """The model folder and the data file; returns the task args."""
    from tests import hf_helpers as H

    records = H.corpus(args.n, sentences_per_row=4, seed=1)
    H.make_lm(root / "model", "gpt2", [r["text"] for r in records], train_steps=args.train_steps,
              vocab_size=args.vocab, layers=args.layers, width=args.width, heads=args.heads,
              positions=max(32, args.seq_len))
    H.write_jsonl(root / "data.jsonl", records)
    return {"model": str(root / "model"), "train": {"data_files": str(root / "data.jsonl")},
            "eval": {"data_files": str(root / "data.jsonl")}, "max_length": args.seq_len,
            "loss": "sum", "granularity": "sequence"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024, help="N: sequences (train = eval)")
    ap.add_argument("--seq-len", type=int, default=16)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--burnin", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch", default="256", help="eval shards of plain and ours, "
                    "comma-separated (each value is a variant pair)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--results-dir", default="", help="write the record here "
                    "(default bench/results; tests use a temp folder)")
    ap.add_argument("--devinterp-python", default=str(REPO / ".venv-devinterp/bin/python"))
    args = ap.parse_args()
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(wanted) - set(VARIANTS):
        sys.exit(f"bench/hf.py: unknown variants {sorted(set(wanted) - set(VARIANTS))}")
    notes = []
    if "devinterp" in wanted and not Path(args.devinterp_python).is_file():
        wanted.remove("devinterp")
        notes.append(f"devinterp skipped: no {args.devinterp_python} "
                     "(bash bench/devinterp_setup.sh makes it)")
    shards = [int(x) for x in args.eval_batch.split(",")]
    sampler = {"chains": args.chains, "draws": args.draws, "burnin_steps": args.burnin,
               "steps_between_draws": 1, "batch_size": args.batch_size, "lr": 1e-4,
               "nbeta": 30.0, "localization": 1e4, "seed": 0, "checkpoint_every": 0,
               "device": "cpu"}
    record = BenchRecord("hf", {**vars(args), "sampler": sampler})
    if args.results_dir:
        record.results_dir = Path(args.results_dir)
    root = Path(tempfile.mkdtemp(prefix="bench_hf_"))
    env = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(root / "datasets_cache"),
           "OMP_NUM_THREADS": str(args.threads)}
    task_args = build_inputs(root, args)

    def config(name: str, shard: int, threads: int) -> Path:
        data = {"task": {"target": TARGET, "args": task_args},
                "sampler": {**sampler, "threads": threads}, "eval": {"batch_size": shard},
                "analysis": {"enabled": False}, "output": str(root / name)}
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        shutil.rmtree(root / name, ignore_errors=True)  # every round samples from scratch
        return path

    def run(variant: str, shard: int) -> dict:
        t0 = time.perf_counter()
        if variant == "plain":
            res = run_measured(PLAIN, json.dumps({
                "target": TARGET, "args": task_args, "sampler": sampler,
                "threads": args.threads, "eval_batch": shard}), env=env)
        elif variant == "ours":
            res = run_measured(OURS, str(config(f"ours{shard}", shard, args.threads)), env=env)
        elif variant == "ours_2ranks":
            per = max(1, args.threads // 2)
            path = config(f"ranks{shard}", shard, per)
            rows = run_torchrun(OURS, root, 2, per, str(path), env=env)
            res = {k: max(r[k] for r in rows) for k in ("imports_s", "setup_s", "loop_s")}
            res.update({k: sum(r[k] for r in rows)
                        for k in ("draws", "user_s", "system_s", "minor_faults")})
            res["peak_rss"] = None
        else:
            shutil.rmtree(root / "devinterp.zarr", ignore_errors=True)
            res = run_measured(DEVINTERP, json.dumps({
                "threads": args.threads, "sampler": sampler, "model": task_args["model"],
                "data": task_args["eval"]["data_files"], "seq_len": args.seq_len,
                "store": str(root / "devinterp.zarr")}), env=env, python=args.devinterp_python)
        res["wall_s"] = time.perf_counter() - t0
        return res

    plan = [(v, s) for v in wanted for s in (shards if v in ("plain", "ours", "ours_2ranks")
                                             else [args.batch_size])]
    rounds: dict[str, list[dict]] = {f"{v}@{s}": [] for v, s in plan}
    try:
        for r in range(args.rounds):
            for variant, shard in plan:
                watch = LoadWatch()
                res = run(variant, shard)
                res["load"] = watch.stop()
                rounds[f"{variant}@{shard}"].append(res)
                print(f"round {r}: {variant} (eval shard {shard}): wall {res['wall_s']:.1f} s, "
                      f"loop {res['loop_s']:.1f} s, system {res['system_s']:.1f} s, "
                      f"load {res['load']['loadavg_before'][0]} -> "
                      f"{res['load']['loadavg_after'][0]}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    summary = []
    for key, runs in rounds.items():
        best = min(runs, key=lambda x: x["wall_s"])
        summary.append({"variant": key, "draws": best["draws"],
                        "wall_s": best["wall_s"], "loop_s": best["loop_s"],
                        "setup_s": best["setup_s"], "imports_s": best["imports_s"],
                        "user_s": best["user_s"], "system_s": best["system_s"],
                        "median_wall_s": statistics.median(x["wall_s"] for x in runs),
                        "draws_per_s": best["draws"] / best["wall_s"],
                        "loop_draws_per_s": best["draws"] / best["loop_s"]})
    by = {row["variant"]: row for row in summary}
    for row in summary:
        shard = row["variant"].split("@")[1]
        for ref in ("plain", "devinterp"):
            base = by.get(f"plain@{shard}") if ref == "plain" else next(
                (v for k, v in by.items() if k.startswith("devinterp")), None)
            row[f"vs_{ref}"] = row["draws_per_s"] / base["draws_per_s"] if base else None
            row[f"loop_vs_{ref}"] = (row["loop_draws_per_s"] / base["loop_draws_per_s"]
                                     if base else None)
    print(table(summary, ["variant", "draws", "wall_s", "loop_s", "setup_s", "imports_s",
                          "user_s", "system_s", "draws_per_s", "vs_plain", "vs_devinterp",
                          "loop_vs_plain", "loop_vs_devinterp"]))
    for note in notes:
        print(note)
    record.config["task_args"] = task_args
    path = record.write({"summary": summary, "rounds": rounds, "notes": notes})
    print(f"record: {path}")
    print(json.dumps({"summary": summary, "notes": notes}))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
