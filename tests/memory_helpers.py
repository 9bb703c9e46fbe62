"""Peak memory of code run in a fresh interpreter, for the tests that bound a reduce's memory.

The code runs in a subprocess so that its high-water mark is its own: ``peak_rss``
reads VmHWM from /proc/self/status, which, unlike getrusage's ru_maxrss, does not
count the (torch-laden) pytest parent that forked it.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap


def peak_rss() -> int:
    """This process's peak resident set size in bytes (VmHWM)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_with_peak_rss(script: str, *args: str) -> dict:
    """Run ``script`` in a fresh Python with ``peak_rss()`` defined; parse its last line as JSON.

    ``sys.argv[1:]`` of the script are ``args``. A failing script raises with its stderr.
    """
    code = inspect.getsource(peak_rss) + "\n" + textwrap.dedent(script)
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"measured script failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
