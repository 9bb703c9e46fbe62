"""bench/hf.py and bench/tokens.py run end to end on tiny models, so that the commands
docs/performance.md quotes keep working; the records go to a temp folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("datasets")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, tmp_path: Path, *args: str) -> tuple[dict, dict]:
    results = tmp_path / "results"
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--results-dir", str(results), *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=900,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    records = list(results.glob("*.json"))
    assert len(records) == 1, records
    return json.loads(out.stdout.strip().splitlines()[-1]), json.loads(records[0].read_text())


def test_hf_bench_runs_plain_and_ours_on_the_same_work(tmp_path):
    result, record = _run(
        "hf.py", tmp_path, "--n", "48", "--seq-len", "8", "--width", "32", "--heads", "2",
        "--vocab", "300", "--train-steps", "3", "--chains", "2", "--draws", "2",
        "--burnin", "1", "--batch-size", "8", "--eval-batch", "16", "--threads", "1",
        "--rounds", "1", "--variants", "plain,ours")
    rows = {r["variant"]: r for r in result["summary"]}
    assert set(rows) == {"plain@16", "ours@16"}
    assert rows["plain@16"]["draws"] == rows["ours@16"]["draws"] == 4  # chains x draws
    assert rows["plain@16"]["vs_plain"] == 1.0 and rows["ours@16"]["vs_plain"] > 0
    for runs in record["result"]["rounds"].values():
        assert len(runs) == 1 and isinstance(runs[0]["load"]["loaded"], bool)
        assert runs[0]["imports_s"] >= 0 and runs[0]["loop_s"] > 0


def test_tokens_bench_counts_every_scored_token(tmp_path):
    result, record = _run(
        "tokens.py", tmp_path, "--sequences", "12", "--tokens", "6", "--train-sequences", "40",
        "--width", "32", "--heads", "2", "--vocab", "300", "--train-steps", "3",
        "--chains", "2", "--draws", "3", "--burnin", "2", "--batch-size", "8",
        "--eval-batch", "20", "--threads", "1", "--keep", str(tmp_path / "run"))
    assert result["n_samples"] == 12 * 6 and result["sequences"] == 12
    assert set(result["phases"]) == {"sample", "reduce", "analysis"}
    assert result["memory_needed"]["dense_float32_gib"] == pytest.approx(72 ** 2 * 4 / 2**30)
    assert result["memory_needed"]["devinterp_token_n2T2_float32_gib"] == pytest.approx(
        (12 * 6) ** 2 * 4 / 2**30)
    assert Path(result["report"]).is_file()
    assert record["config"]["run_config"]["task"]["args"]["granularity"] == "token"
