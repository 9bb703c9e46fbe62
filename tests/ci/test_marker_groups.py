"""tests/marker_groups.py: the per-group counts scripts/test.sh prints, and required groups.

Runs pytest in a subprocess on a made-up test file whose outcomes are known.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

TESTS = '''
import pytest

@pytest.mark.slurm
def test_submits():
    pass

@pytest.mark.slurm
@pytest.mark.slow
def test_requeues():
    pytest.skip("the cluster is down")

@pytest.mark.gpu
def test_on_gpu():
    pytest.skip("no CUDA device")

@pytest.mark.vision
def test_inception():
    pass

@pytest.mark.slow
def test_fails():
    assert False

def test_plain():  # the variables are the session's, not its subprocesses'
    import os
    assert "LOSSKERNEL_REQUIRE_GROUPS" not in os.environ
    assert "LOSSKERNEL_GROUPS_FILE" not in os.environ
'''


def run(tmp_path: Path, *args: str, require: str = "") -> tuple[int, list[str]]:
    (tmp_path / "test_made_up.py").write_text(TESTS)
    (tmp_path / "test_needs_extra.py").write_text(
        'import pytest\npytest.importorskip("no_such_module_xyz", reason="the extra is missing")\n')
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slurm\n    slow\n    gpu\n"
                                         "    vision\n")
    groups = tmp_path / "groups.txt"
    groups.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "LOSSKERNEL_GROUPS_FILE": str(groups),
           "LOSSKERNEL_REQUIRE_GROUPS": require, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
         "tests.marker_groups", *args, "test_made_up.py", "test_needs_extra.py"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert "marked groups" in out.stdout, out.stdout + out.stderr
    return out.returncode, groups.read_text().splitlines()


def test_counts_per_group(tmp_path):
    rc, lines = run(tmp_path, "-m", "not vision", "-k", "not fails")
    assert rc == 0
    assert lines == [
        "selection: -m 'not vision' -k 'not fails'",
        "gpu: 0 ran, 1 skipped, skipped because: no CUDA device",
        "slow: 0 ran, 1 skipped, 1 deselected, skipped because: the cluster is down",
        "slurm: 1 ran, 1 passed, 1 skipped, skipped because: the cluster is down",
        "vision: 0 ran, 1 deselected",
        "all: 4 ran or skipped (2 passed, 2 skipped)",
        "not collected: test_needs_extra.py (the extra is missing)",
    ]


def test_a_failure_is_counted_in_its_group(tmp_path):
    rc, lines = run(tmp_path, "-m", "slow")
    assert rc == 1
    assert "slow: 1 ran, 1 failed, 1 skipped, skipped because: the cluster is down" in lines


def test_a_required_group_that_skipped_fails_the_session(tmp_path):
    rc, lines = run(tmp_path, "-k", "not fails", require="slurm")
    assert rc == 1
    assert lines[-1].startswith("FAILED required group 'slurm': 1 test(s) skipped")
    assert "the cluster is down" in lines[-1]


def test_a_required_group_that_did_not_run_fails_the_session(tmp_path):
    rc, lines = run(tmp_path, "-m", "not vision", "-k", "not fails", require="vision")
    assert rc == 1 and lines[-1] == "FAILED required group 'vision': no test of it ran"


def test_a_required_group_that_ran_passes(tmp_path):
    rc, lines = run(tmp_path, "-m", "vision", require="vision")
    assert rc == 0 and "vision: 1 ran, 1 passed" in lines
    assert not any(line.startswith("FAILED") for line in lines)
