"""Shared bits of the benchmarks: timing in a fresh subprocess with its peak RSS."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap


def run_measured(
    code: str, *args: str, env: dict | None = None, python: str = sys.executable
) -> dict:
    """Run ``code`` in a fresh ``python``; it must print one JSON dict as its last line.

    The child's own peak RSS (VmHWM, which, unlike getrusage, does not inherit the
    parent's high-water mark across exec) is added as ``peak_rss``.
    """
    wrapper = textwrap.dedent(code) + textwrap.dedent("""
        def _vmhwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        RESULT["peak_rss"] = _vmhwm()
        print(json.dumps(RESULT))
    """)
    out = subprocess.run(
        [python, "-c", wrapper, *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})},
    )
    if out.returncode:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_torchrun(
    code: str, workdir, ranks: int, threads: int, *args: str, env: dict | None = None
) -> list[dict]:
    """Run ``code`` (which sets ``RESULT``) as ``ranks`` torchrun processes; their RESULTs.

    Each rank writes its RESULT to a file of its own (printed lines of several ranks
    can interleave mid-line). ``threads`` is each rank's OMP_NUM_THREADS.
    """
    from pathlib import Path

    workdir = Path(workdir)
    files = [workdir / f"rank{r}.json" for r in range(ranks)]
    for f in files:
        f.unlink(missing_ok=True)
    script = workdir / "torchrun_child.py"
    script.write_text(textwrap.dedent(code) + textwrap.dedent(f"""
        import os as _os
        with open({str(workdir)!r} + f"/rank{{_os.environ['RANK']}}.json", "w") as _f:
            _f.write(json.dumps(RESULT))
    """))
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={ranks}", str(script), *args],
        capture_output=True, text=True,
        env={**os.environ, **(env or {}), "OMP_NUM_THREADS": str(threads)},
    )
    if out.returncode:
        raise RuntimeError(f"torchrun benchmark failed:\n{out.stderr[-3000:]}")
    return [json.loads(f.read_text()) for f in files]


# The floor every sampling benchmark compares against: the same SGLD steps and eval
# passes as `losskernel sample`, in the plainest PyTorch (module parameters updated in
# place, one torch generator, no store, no keys, no checkpoints). A benchmark's child
# code defines ``task``, ``s`` (the sampler section), ``eval_batch`` and ``seed`` before
# it, and reads ``out`` (chains, draws, N) and ``seconds`` after it.
PLAIN_SGLD_LOOP = """
from losskernel_dist.sampler.schedule import StepSchedule

model = task.model.eval()
params = [p for p in model.parameters() if p.requires_grad]
anchor = [p.detach().clone() for p in params]
train = task.train.tensors
ev = task.eval.tensors
n, N, b = len(train[0]), len(ev[0]), s["batch_size"]
shards = [[t[i:i + eval_batch] for t in ev] for i in range(0, N, eval_batch)]
lr, nbeta, loc = s["lr"], s["nbeta"], s["localization"]
schedule = StepSchedule(s["burnin_steps"], s["draws"], s["steps_between_draws"])
total = schedule.total_steps
out = np.empty((s["chains"], s["draws"], N), np.float32)
gen = torch.Generator().manual_seed(seed)
t0 = time.perf_counter()
for c in range(s["chains"]):
    with torch.no_grad():
        for p, a in zip(params, anchor):
            p.copy_(a)
    for step in range(total):
        idx = torch.randperm(n, generator=gen)[:b]
        loss = task.loss(model, [t[idx] for t in train]).mean()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g, a in zip(params, grads, anchor):
                p.add_(-(lr / 2) * (nbeta * g + loc * (p - a))
                       + math.sqrt(lr) * torch.randn(p.shape, generator=gen))
        draw = schedule.draw_index(step + 1)
        if draw is not None:
            with torch.inference_mode():
                vec = torch.cat([task.loss(model, sh) for sh in shards])
            out[c, draw] = vec.numpy()
seconds = time.perf_counter() - t0
"""


def machine() -> dict:
    import numpy as np
    import threadpoolctl

    blas = [
        {k: v for k, v in info.items() if k in ("internal_api", "num_threads", "architecture")}
        for info in threadpoolctl.threadpool_info()
    ]
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    line = "  ".join(c.ljust(widths[c]) for c in columns)
    body = ["  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join([line, "-" * len(line), *body])


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "" if v is None else str(v)
