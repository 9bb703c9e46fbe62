"""bench/device/run.py's gpu_bench step (bench/gpu.py with its floor) runs at toy sizes on the
CPU. It needs torchvision, so it runs in ``.venv-vision`` like tests/bench/test_bench_gpu.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ..vision_helpers import requires_torchvision

pytestmark = requires_torchvision("tests/bench/test_device_gpu_bench.py")

REPO = Path(__file__).resolve().parents[2]


def test_the_gpu_bench_step_records_draws_floor_and_share(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "bench" / "device" / "run.py"),
                           "--dry-run", "--steps", "gpu_bench", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((tmp_path / "device_run.json").read_text())
    (step,) = record["steps"]
    assert step["name"] == "gpu_bench" and step["status"] == "ok", step
    result = record["results"]["gpu_bench"]
    assert [row["variant"] for row in result["rows"]] == ["plain", "optimized"]
    assert result["floor"]["float32_images_per_s"] > 0 and result["floor"]["bf16_images_per_s"] > 0
    for row in result["rows"]:
        assert row["draws_per_s"] > 0 and row["eval_share_of_floor"] > 0
    assert "bench/gpu.py" in result["command"]
