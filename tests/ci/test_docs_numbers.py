"""Every result the docs quote is a number of a JSON record they cite (scripts/docs_numbers.py).

The first test is the check itself on the committed docs; the others show the
checker can fail: a typed number, a record that does not hold it, a record that
does not exist.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("docs_numbers", REPO / "scripts" / "docs_numbers.py")
docs_numbers = importlib.util.module_from_spec(_spec)
sys.modules["docs_numbers"] = docs_numbers  # its dataclasses look their module up
_spec.loader.exec_module(docs_numbers)


def test_every_quoted_result_in_the_docs_is_in_a_cited_record():
    problems = [p for doc in docs_numbers.DEFAULT_DOCS
                for p in docs_numbers.check_file(REPO / doc)]
    assert not problems, "\n".join(problems[:40]) + f"\n({len(problems)} in all)"


@pytest.fixture
def record(monkeypatch, tmp_path):
    """A record under a fake repository root, and a results page that cites it."""
    monkeypatch.setattr(docs_numbers, "REPO", tmp_path)
    (tmp_path / "bench" / "results").mkdir(parents=True)
    data = {"command": "python bench/x.py --n 8000", "result": {
        "ratio": 0.8174, "seconds": 201.4, "peak_rss_bytes": 1288490188, "auc": 0.99761,
        "cov": 2.5683e-5, "fraction": 0.854}}
    (tmp_path / "bench" / "results" / "x-1.json").write_text(json.dumps(data))
    return tmp_path


def _check(root: Path, body: str) -> list[str]:
    page = root / "results.md"
    page.write_text(body)
    return docs_numbers.check_file(page)


def test_numbers_of_the_cited_record_pass_at_their_shown_precision(record):
    body = ("# R\n\nRecord: `bench/results/x-1.json`.\n\n| a | b |\n|---|---|\n"
            "| ratio | **0.82** |\n| auc | 0.998 |\n| cov | 2.57e-5 |\n\n"
            "It took 201 s (3.4 min), peak 1.2 GiB, 85% of neighbours; N = 8,000 samples.\n")
    assert _check(record, body) == []


def test_a_typed_number_fails(record):
    body = "# R\n\nRecord: `bench/results/x-1.json`.\n\n| a | b |\n|---|---|\n| ratio | 0.93 |\n"
    problems = _check(record, body)
    assert len(problems) == 1 and "'0.93'" in problems[0]


def test_a_number_in_a_section_citing_no_record_fails(record):
    body = ("# R\n\n## Cited\n\nRecord: `bench/results/x-1.json`: 0.82.\n\n"
            "## Not cited\n\nThe reduce ran at 0.82 of numpy.\n")
    problems = _check(record, body)
    assert len(problems) == 1 and "Not cited" in problems[0]


def test_a_missing_record_fails(record):
    problems = _check(record, "# R\n\nRecord: `bench/results/gone.json`.\n")
    assert problems and "does not exist" in problems[0]


def test_code_versions_plain_integers_and_arithmetic_sections_are_not_results(record):
    body = ("# R\n\nRan `bench/x.py --repeats 3` with torch 2.13.0 on 2 cores, 8 chains.\n\n"
            "    python bench/x.py --lr 3.7e-8\n\n"
            "## Cost model <!-- arithmetic -->\n\n7.5e3 x 1e4 = 7.5e7 forwards, ~92% of it.\n")
    assert _check(record, body) == []


def test_against_requires_a_regenerated_record_with_the_same_result_keys(record, tmp_path):
    page = record / "results.md"
    page.write_text("# R\n\nRecord: `bench/results/x-1.json`.\n")
    cited = json.loads((record / "bench" / "results" / "x-1.json").read_text())
    quick = tmp_path / "quick"
    quick.mkdir()
    assert "no regenerated" in docs_numbers.check_against([page], quick)[0]
    cited["bench"] = "x"
    (record / "bench" / "results" / "x-1.json").write_text(json.dumps(cited))
    (quick / "x-2.json").write_text(json.dumps({"bench": "x", "result": {"ratio": 1}}))
    assert "no regenerated record has" in docs_numbers.check_against([page], quick)[0]
    (quick / "x-3.json").write_text(json.dumps({"bench": "x", "result": cited["result"]}))
    assert docs_numbers.check_against([page], quick) == []
