"""Benchmark: a token-level loss kernel at N >= 100,000 through the streamed-neighbours reduce.

The task is ``losskernel_dist.tasks.hf:causal_lm`` with ``granularity: token`` on a
small GPT-2-style model built here with ``transformers`` (``--layers`` x
``--width``, briefly trained on the generated corpus of tests/hf_helpers.py, with a
byte-level BPE trained with ``tokenizers``), over ``--sequences`` eval texts long
enough that each has exactly ``--tokens`` scored tokens: N = sequences x tokens
kernel samples. The run is ``reduce.kernel: neighbours`` (top-k lists streamed from
the draws; no N x N array is ever held or written), then the whole analysis and
the report.

Each phase runs in a fresh process, so its time and peak RSS are its own:
sampling (``lk.sample``: task build, losses at w*, chains, writes), reduce
(``lk.reduce``) and analysis (``lk.analyze``: metrics, maps, report). Printed
beside them: the memory a dense in-memory kernel would need for the same N (one
N x N float32 matrix, and numpy.cov's float64 one), and devinterp 2.0.1's token
mode, whose token-wise BIF (``devinterp.slt.bif._tokenwise_bif``) allocates
``np.empty((n, n, T, T), float32)`` for n sequences of T target positions
(seq_len - 1, here ``--tokens``): n^2 T^2 entries. The machine's load before and
after each phase is recorded.

    python bench/tokens.py                                   # N = 1,000 x 100 = 100,000
    python bench/tokens.py --sequences 40 --tokens 20 --draws 4   # a quick check

Writes bench/results/tokens-<time>.json and prints its result as the last line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _record import BenchRecord, LoadWatch  # noqa: E402
from _util import run_measured, table  # noqa: E402

PHASE = """
import json, resource, sys, time
t0 = time.perf_counter()
import losskernel_dist as lk
phase, target = sys.argv[1], sys.argv[2]
if phase == "sample":
    run = lk.sample(lk.load_config(target), progress=False)
    extra = {"chain_seconds": run.sample_report.seconds,
             "draws": run.sample_report.draws_written}
elif phase == "reduce":
    run = lk.reduce(target, progress=False)
    extra = {"reduce_seconds": run.reduce_report.seconds}
else:
    run = lk.analyze(target)
    extra = {"report": str(run.report_path)}
usage = resource.getrusage(resource.RUSAGE_SELF)
RESULT = {"seconds": time.perf_counter() - t0, "user_s": usage.ru_utime,
          "system_s": usage.ru_stime, **extra}
"""

GiB = 1024 ** 3


def build_inputs(root: Path, args: argparse.Namespace) -> dict:
    """The model folder and the train/eval files; returns the task args."""
    from tests import hf_helpers as H

    sentences = max(4, args.tokens // 4)  # texts well over --tokens tokens, then truncated
    train_texts = H.corpus(args.train_sequences, sentences, seed=1)
    H.make_lm(root / "model", "gpt2", [r["text"] for r in train_texts[:400]],
              train_steps=args.train_steps, vocab_size=args.vocab, layers=args.layers,
              width=args.width, heads=args.heads, positions=max(128, args.tokens + 1))
    H.write_jsonl(root / "train.jsonl", train_texts)
    H.write_jsonl(root / "eval.jsonl", H.corpus(args.sequences, sentences, seed=2))
    return {"model": str(root / "model"), "train": {"data_files": str(root / "train.jsonl")},
            "eval": {"data_files": str(root / "eval.jsonl")}, "max_length": args.tokens + 1,
            "granularity": "token", "loss": "sum"}


def dense_memory(n_samples: int, sequences: int, positions: int) -> dict:
    """GiB a dense kernel of N samples would take, and devinterp's token-mode array
    (n sequences x n x ``positions`` x ``positions`` float32)."""
    return {
        "dense_float32_gib": n_samples ** 2 * 4 / GiB,
        "dense_float64_gib": n_samples ** 2 * 8 / GiB,
        "dense_cov_and_corr_float32_gib": 2 * n_samples ** 2 * 4 / GiB,
        "devinterp_token_n2T2_float32_gib": (sequences * positions) ** 2 * 4 / GiB,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=100, help="scored tokens per sequence")
    ap.add_argument("--train-sequences", type=int, default=2000)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=400)
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--burnin", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch", type=int, default=8192, help="eval shard, in tokens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results-dir", default="", help="write the record here "
                    "(default bench/results; tests use a temp folder)")
    ap.add_argument("--keep", default="", help="keep the run here (default: a temp folder)")
    args = ap.parse_args()

    record = BenchRecord("tokens", {**vars(args)})
    if args.results_dir:
        record.results_dir = Path(args.results_dir)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_tokens_"))
    root.mkdir(parents=True, exist_ok=True)
    task_args = build_inputs(root, args)
    output = root / "run"
    shutil.rmtree(output, ignore_errors=True)
    config = {
        "task": {"target": "losskernel_dist.tasks.hf:causal_lm", "args": task_args},
        "sampler": {"chains": args.chains, "draws": args.draws, "burnin_steps": args.burnin,
                    "batch_size": args.batch_size, "lr": 1e-5, "nbeta": 10.0,
                    "localization": 1e4, "seed": 0, "device": "cpu", "threads": args.threads,
                    "checkpoint_every": 0},
        "eval": {"batch_size": args.eval_batch},
        "reduce": {"kernel": "neighbours", "threads": args.threads},
        "output": str(output),
    }
    config_path = root / "tokens.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {"OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(root / "datasets_cache"),
           "PYTHONPATH": str(HERE.parent)}

    phases = {}
    loads = {}
    for phase, target in (("sample", config_path), ("reduce", output), ("analysis", output)):
        watch = LoadWatch()
        phases[phase] = run_measured(PHASE, phase, str(target), env=env)
        loads[phase] = watch.stop()
        print(f"{phase}: {phases[phase]['seconds']:.1f} s, peak RSS "
              f"{phases[phase]['peak_rss'] / GiB:.2f} GiB, load {loads[phase]}", flush=True)

    import zarr

    store = zarr.open_group(str(output / "store.zarr"), mode="r")
    n_samples = int(store["losses"].shape[2])
    sequences = int(store["attributes/sequence"][...].max()) + 1
    result = {
        "n_samples": n_samples,
        "sequences": sequences,
        "draws_total": args.chains * args.draws,
        "phases": {k: {"seconds": round(v["seconds"], 1), "peak_rss_gib": v["peak_rss"] / GiB,
                       "user_s": round(v["user_s"], 1), "system_s": round(v["system_s"], 1),
                       **{x: v[x] for x in ("chain_seconds", "reduce_seconds") if x in v}}
                   for k, v in phases.items()},
        "total_seconds": round(sum(v["seconds"] for v in phases.values()), 1),
        "max_peak_rss_gib": max(v["peak_rss"] for v in phases.values()) / GiB,
        "memory_needed": dense_memory(n_samples, sequences, args.tokens),
        "store_bytes": sum(f.stat().st_size for f in (output / "store.zarr").rglob("*")
                           if f.is_file()),
        "report": phases["analysis"].get("report"),
        "load": loads,
    }
    rows = [{"phase": k, "seconds": v["seconds"], "peak RSS GiB": v["peak_rss_gib"],
             "user s": v["user_s"], "system s": v["system_s"]}
            for k, v in result["phases"].items()]
    print(table(rows, ["phase", "seconds", "peak RSS GiB", "user s", "system s"]))
    print(f"N = {n_samples:,} tokens ({sequences} sequences); memory a dense kernel would need: "
          + ", ".join(f"{k} {v:,.1f}" for k, v in result["memory_needed"].items()))
    record.config["run_config"] = config
    path = record.write(result)
    print(f"record: {path}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
