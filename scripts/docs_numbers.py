"""Check that every result quoted in the docs is a number in a JSON record the docs cite.

Every number the docs give as a measurement must have been printed by a command
of this repository that also wrote a JSON record (`bench/results/*.json`, written
by `bench/_record.py`). This script reads each Markdown file, splits it into
sections at its headings, and collects the record files a section cites (any
`bench/results/NAME.json` in its text; a section also sees the records its
parent sections cite). On the pages of measurements (results.md, performance.md)
every section is checked; on the other pages, the sections that
cite a record. Every *quoted result* of a checked section must equal a number of
those records at the precision the docs show it:

- every number in a table row;
- in prose, every number written with a decimal point, in scientific notation,
  as a percentage, in bold, or followed by a unit (s, ms, us, min, h, x, and
  KiB/MiB/GiB/KB/MB/GB, which also match a record's bytes).

Not checked: numbers inside code (commands, config keys), link targets,
headings, plain integers in prose ("8 chains", "N = 10,000": configuration, whose
values the records hold anyway), and version strings such as 2.13.0. A
section whose heading ends with the marker ``<!-- arithmetic -->`` holds worked
examples of formulas, not measurements, and is skipped.

A record's numbers are its numeric values and the numbers inside its strings
(versions, dates, commands). A doc number with k decimals matches a record value
within half a unit of its last digit (scientific notation: of its mantissa's
last digit); a unit lets the value be scaled first (``%``: x100, ``ms``: x1000,
``min``: /60, ``MiB``: bytes / 2^20, ...).

    python scripts/docs_numbers.py                 # check README.md and docs/*.md
    python scripts/docs_numbers.py docs/results.md --list   # what was matched where
    python scripts/docs_numbers.py --against bench/results/quick  # after reproduce.sh --quick
Exit 0 when every quoted result is backed, 1 (and one line per number) when not.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DOCS = ("README.md", "docs/results.md", "docs/performance.md", "docs/calibration.md",
                "docs/analysis.md", "docs/byom_text.md", "docs/development.md")
# pages of measurements: every section is checked; elsewhere only sections that cite a record
RESULT_PAGES = ("results.md", "performance.md")
RECORD_RE = re.compile(r"bench/results/[A-Za-z0-9_.+-]+\.json")
ARITHMETIC_MARK = "<!-- arithmetic -->"
# a number: not glued to a word, dot or hyphenated word before it, not a version (no second dot
# after it); in a range 0.51-0.59 both ends count, the second without a sign
NUMBER_RE = re.compile(
    r"(?<![\w./])(?<![A-Za-z_]-)(?P<sign>(?<![\w.])[-−])?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?P<exp>[eE][-+−]?\d+)?(?![\d.]*\.\d)(?![\w])(?P<pct>%)?"
)
UNIT_RE = re.compile(r"\s?(ms|us|µs|s|min|h|x|×|KiB|MiB|GiB|KB|MB|GB|TB)\b")
UNIT_SCALES: dict[str, tuple[float, ...]] = {
    "%": (1.0, 100.0), "ms": (1.0, 1e3), "us": (1.0, 1e6), "µs": (1.0, 1e6),
    "s": (1.0,), "min": (1.0, 1 / 60), "h": (1.0, 1 / 3600), "x": (1.0,), "×": (1.0,),
    "KiB": (1.0, 2.0**-10), "MiB": (1.0, 2.0**-20), "GiB": (1.0, 2.0**-30),
    "KB": (1.0, 1e-3, 2.0**-10), "MB": (1.0, 1e-6, 2.0**-20),
    "GB": (1.0, 1e-9, 2.0**-30), "TB": (1.0, 1e-12, 2.0**-40),
}


@dataclass
class Quoted:
    """One number the docs quote as a result, with where it stands."""

    text: str
    value: float
    half_ulp: float  # half a unit of its last shown digit (absolute)
    scales: tuple[float, ...]
    line: int


@dataclass
class Section:
    title: str
    level: int
    start: int
    lines: list[str] = field(default_factory=list)
    records: set[str] = field(default_factory=set)
    arithmetic: bool = False


def _strip_code(line: str) -> str:
    line = re.sub(r"`[^`]*`", " ", line)
    line = re.sub(r"\]\([^)]*\)", "]", line)
    return re.sub(r"<!--.*?-->", " ", line)


def _parse_number(match: re.Match[str]) -> tuple[float, float]:
    num = match["num"].replace(",", "")
    exp = (match["exp"] or "").replace("−", "-")
    sign = -1.0 if match["sign"] else 1.0
    decimals = len(num.split(".")[1]) if "." in num else 0
    value = sign * float(num + exp)
    scale = 10.0 ** int(exp[1:]) if exp else 1.0
    return value, 0.5 * 10.0**-decimals * scale


def quoted_numbers(line: str, line_no: int, *, table: bool) -> list[Quoted]:
    """The numbers of one Markdown line that count as quoted results."""
    text = _strip_code(line)
    found = []
    for m in NUMBER_RE.finditer(text):
        if m["exp"] and len(m["exp"].lstrip("eE+-−")) > 3:
            continue  # a commit hash such as 3e55515, not a number
        value, half_ulp = _parse_number(m)
        after = text[m.end():]
        unit = "%" if m["pct"] else ((u := UNIT_RE.match(after)) and u.group(1))
        bold = text[max(0, m.start() - 2):m.start()] == "**" or after.startswith("**")
        if not table and not (unit or bold or "." in m["num"] or m["exp"]):
            continue
        scales = UNIT_SCALES.get(unit or "", (1.0,))
        found.append(Quoted(m.group(0), value, half_ulp, scales, line_no))
    return found


def sections(text: str) -> list[Section]:
    """The file's sections; each knows the records it and its parents cite."""
    out: list[Section] = [Section("(top)", 0, 1)]
    stack: list[Section] = [out[0]]
    fenced = False
    for i, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        heading = re.match(r"(#{1,6})\s+(.*)", line) if not fenced else None
        if heading:
            level = len(heading.group(1))
            while stack and stack[-1].level >= level:
                stack.pop()
            sec = Section(heading.group(2).strip(), level, i,
                          records=set().union(*(s.records for s in stack)) if stack else set(),
                          arithmetic=heading.group(2).rstrip().endswith(ARITHMETIC_MARK))
            out.append(sec)
            stack.append(sec)
            continue
        sec = out[-1]
        sec.records.update(RECORD_RE.findall(line))
        sec.lines.append("```" if fenced or line.lstrip().startswith("```") else line)
    # a record cited anywhere in a section also serves the subsections after it
    for j, sec in enumerate(out):
        for later in out[j + 1:]:
            if later.level <= sec.level:
                break
            later.records |= sec.records
    return out


def record_numbers(path: Path) -> list[float]:
    """Every number of a JSON record: numeric leaves and the numbers inside its strings."""
    values: list[float] = []

    def walk(node: object) -> None:
        if isinstance(node, bool) or node is None:
            return
        if isinstance(node, (int, float)):
            if math.isfinite(node):
                values.append(float(node))
        elif isinstance(node, str):
            values.extend(float(x) for x in re.findall(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", node))
        elif isinstance(node, dict):
            for key, val in node.items():
                walk(key)
                walk(val)
        elif isinstance(node, list):
            for val in node:
                walk(val)

    walk(json.loads(path.read_text()))
    return values


def backed(q: Quoted, values: list[float]) -> bool:
    for v in values:
        for s in q.scales:
            x = v * s
            if abs(x - q.value) <= q.half_ulp * (1 + 1e-9) + 1e-15:
                return True
    return False


def check_file(path: Path, *, listing: bool = False) -> list[str]:
    """One line per quoted result of ``path`` that no cited record backs."""
    problems = []
    cache: dict[str, list[float]] = {}
    for sec in sections(path.read_text()):
        if sec.arithmetic or (path.name not in RESULT_PAGES and not sec.records):
            continue
        values: list[float] = []
        for rec in sorted(sec.records):
            if rec not in cache:
                file = REPO / rec
                if not file.is_file():
                    problems.append(f"{path.name}:{sec.start}: section '{sec.title}' cites "
                                    f"{rec}, which does not exist")
                    cache[rec] = []
                else:
                    cache[rec] = record_numbers(file)
            values.extend(cache[rec])
        fenced = False
        for offset, line in enumerate(sec.lines, 1):
            if line == "```":
                fenced = not fenced
                continue
            if fenced or line.startswith("    ") or line.startswith("!["):
                continue
            table = line.lstrip().startswith("|")
            if table and re.fullmatch(r"\s*\|[\s:|-]*\|?\s*", line):
                continue
            for q in quoted_numbers(line, sec.start + offset, table=table):
                ok = backed(q, values)
                if listing:
                    print(f"{path.name}:{q.line}: {q.text!r} {'ok' if ok else 'NOT BACKED'}")
                if not ok:
                    where = ", ".join(sorted(sec.records)) or "no record cited"
                    problems.append(f"{path.name}:{q.line}: {q.text!r} in '{sec.title}' is in "
                                    f"no cited record ({where})")
    return problems


def _result_keys(record: dict) -> set[str]:
    result = record.get("result")
    return set(result) if isinstance(result, dict) else set()


def check_against(files: list[Path], folder: Path) -> list[str]:
    """Every record the docs cite has a regenerated record of the same bench in ``folder``
    (e.g. bench/results/quick/ after ``reproduce.sh --quick``) whose result has the same
    keys: the commands that made the docs' numbers still run and still measure them."""
    cited = sorted({rec for f in files for sec in sections(f.read_text()) for rec in sec.records})
    fresh: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        fresh.setdefault(data.get("bench", ""), []).append(data)
    problems = []
    for rec in cited:
        if not (REPO / rec).is_file():
            continue  # check_file reports it
        old = json.loads((REPO / rec).read_text())
        candidates = fresh.get(old.get("bench", ""), [])
        if not candidates:
            problems.append(f"{rec}: no regenerated '{old.get('bench')}' record in {folder}")
            continue
        # one bench may write several kinds of record (bench/reduce.py: dense, top-k, ...)
        missing = min((_result_keys(old) - _result_keys(new) for new in candidates), key=len)
        if missing:
            problems.append(f"{rec}: no regenerated record has {sorted(missing)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("docs", nargs="*", help=f"Markdown files (default: {' '.join(DEFAULT_DOCS)})")
    ap.add_argument("--list", action="store_true", help="print every quoted result and its state")
    ap.add_argument("--against", type=Path, default=None, metavar="DIR",
                    help="also require a regenerated record with the same result keys in DIR "
                         "for every cited record (after reproduce.sh --quick)")
    args = ap.parse_args(argv)
    files = [Path(p) for p in args.docs] or [REPO / p for p in DEFAULT_DOCS]
    problems = [p for f in files for p in check_file(f, listing=args.list)]
    if args.against is not None:
        problems += check_against(files, args.against)
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} quoted result(s) with no record: rerun the command that "
              "measures them (scripts/reproduce.sh) and cite its record, or remove them",
              file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
