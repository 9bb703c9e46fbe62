"""Benchmark: ``losskernel sample`` with synchronous commits against the background writer.

The same run (the modular demo, configs/demo_modular.yaml, shortened) is sampled
with ``sampler.write_queue`` 0 (draws, checkpoint and done flags written inline)
and with the background writer, each in a fresh process and a fresh run
directory, the variants interleaved so that load on a shared machine hits both
alike. Reported, per repeat and as median and minimum: ``chains_s``, the time
of the chain loop (``SampleReport.seconds``: every SGLD step, eval pass and
commit, up to the writer's final drain), and ``total_s``, all of ``sample()``
(task loading, the reference losses at w* and store creation included); and
``commit_s``, the time spent making the commits (on the writer thread when
``write_queue`` > 0, in the chain loop when it is 0: then it is what the writer can
save at most), with the part of it spent saving checkpoints.
``--checkpoint-every 2`` makes a commit (with its fsynced checkpoint) at every
draw: the case where writes weigh most. Each run's load (foreign CPU per second,
``bench/_record.py``'s LoadWatch) is recorded with it; the JSON record goes to
bench/results/writer-*.json.

    python bench/writer.py [--chains 2 --draws 40 --burnin 20 --repeats 3 --queues 0,4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import BenchRecord, LoadWatch  # noqa: E402
from _util import run_measured, table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, os, sys, time
from losskernel_dist.jobs import commits as C, sample as S
from losskernel_dist.config import load_config
from losskernel_dist.store import RunStore
RunStore.sync_writes = os.environ.get("LK_BENCH_DURABLE", "1") == "1"
spent = {"commits": 0, "commit_s": 0.0, "checkpoint_s": 0.0}
def timed(fn, key, count=False):
    def wrapper(*args):
        t = time.perf_counter()
        out = fn(*args)
        spent[key] += time.perf_counter() - t
        spent["commits"] += count
        return out
    return wrapper
C.ChainWriter._write = timed(C.ChainWriter._write, "commit_s", True)  # one whole commit
C.save_chain = timed(C.save_chain, "checkpoint_s")                   # its checkpoint part
config = load_config(sys.argv[1], sys.argv[2:])
t0 = time.perf_counter()
report = S.sample(config, progress=False)
RESULT = {"seconds": time.perf_counter() - t0, "chains_s": report.seconds,
          "draws": report.draws_written, **spent}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "demo_modular.yaml"))
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--draws", type=int, default=40)
    parser.add_argument("--burnin", type=int, default=20)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queues", default="0,4", help="comma-separated sampler.write_queue")
    parser.add_argument("--durable", default="1",
                        help="comma-separated 1 (fsync chunk files before done flags, the "
                             "default) / 0 (no fsync: what durability costs)")
    args = parser.parse_args()
    variants = [(int(q), int(d)) for d in args.durable.split(",")
                for q in args.queues.split(",")]
    record = BenchRecord("writer", vars(args))
    times: dict[tuple[int, int], list[float]] = {v: [] for v in variants}
    totals: dict[tuple[int, int], list[float]] = {v: [] for v in variants}
    commits: dict[tuple[int, int], list[dict]] = {v: [] for v in variants}
    loads: dict[tuple[int, int], list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="bench_writer_") as tmp:
        for r in range(args.repeats):
            for q, durable in variants:  # interleaved: load hits every variant alike
                out = Path(tmp) / f"q{q}_d{durable}_r{r}"
                sets = [f"sampler.chains={args.chains}", f"sampler.draws={args.draws}",
                        f"sampler.burnin_steps={args.burnin}",
                        f"sampler.checkpoint_every={args.checkpoint_every}",
                        f"sampler.threads={args.threads}", "sampler.device=cpu",
                        f"sampler.write_queue={q}", f"output={out}"]
                watch = LoadWatch()
                res = run_measured(CHILD, args.config, *sets,
                                   env={"OMP_NUM_THREADS": str(args.threads),
                                        "LK_BENCH_DURABLE": str(durable)})
                loads[(q, durable)].append(watch.stop())
                times[(q, durable)].append(res["chains_s"])
                totals[(q, durable)].append(res["seconds"])
                commits[(q, durable)].append(
                    {k: res[k] for k in ("commits", "commit_s", "checkpoint_s")})
                print(f"repeat {r} write_queue {q} durable {durable}: chains "
                      f"{res['chains_s']:.2f} s, total {res['seconds']:.2f} s, {res['draws']} "
                      f"draws, {res['commits']} commits taking {res['commit_s']:.3f} s "
                      f"(checkpoints {res['checkpoint_s']:.3f} s)", file=sys.stderr, flush=True)
    rows = [{"write_queue": q, "durable": d, "chains_median_s": statistics.median(t),
             "chains_min_s": min(t), "total_median_s": statistics.median(totals[(q, d)]),
             "commit_median_s": statistics.median(c["commit_s"] for c in commits[(q, d)]),
             "checkpoint_median_s": statistics.median(c["checkpoint_s"]
                                                      for c in commits[(q, d)]),
             "commits": commits[(q, d)][0]["commits"],
             "loaded_runs": sum(x["loaded"] for x in loads[(q, d)]),
             "chains_runs_s": t,
             "runs": [{"chains_s": c, "total_s": tt, **cm, **ld} for c, tt, cm, ld in
                      zip(t, totals[(q, d)], commits[(q, d)], loads[(q, d)], strict=True)]}
            for (q, d), t in times.items()]
    print(table(rows, ["write_queue", "durable", "chains_median_s", "chains_min_s",
                       "total_median_s", "commit_median_s", "loaded_runs"]))
    print(record.write({"rows": rows}))


if __name__ == "__main__":
    main()
