"""Shared bits of the benchmarks: timing in a fresh subprocess with its peak RSS."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap


def run_measured(code: str, *args: str, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh Python; it must print one JSON dict as its last line.

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
        [sys.executable, "-c", wrapper, *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})},
    )
    if out.returncode:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


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
