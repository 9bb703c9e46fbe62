"""HTML pieces both reports are made of: the stylesheet, escaping, number formats, tables,
embedded figures, collapsible JSON, and the page's head and end.

The analysis report (html.py) and the calibration report (calibration.py) are
self-contained pages that look alike: figures are embedded as base64 PNG data,
styles are inline, and nothing refers to a network.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #1d1d1f; background: #fafafa; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5em 2em 4em; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
p.lead { color: #444; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.88em; color: #444; margin-top: 0.3em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.82em; }
.warn { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 0.8em; }
.ok { background: #eef8ee; border-left: 4px solid #3a3; padding: 0.5em 0.8em; }
nav a { margin-right: 0.9em; font-size: 0.9em; }
"""

PAGE_END = "</main></body></html>"

Formatter = Callable[[Any], str]


def escape(value: Any) -> str:
    """``value`` as HTML text."""
    return html.escape(str(value))


def fmt_value(value: Any) -> str:
    """A number as a table shows it: thousands separators, 4 significant digits."""
    if isinstance(value, bool) or value is None:
        return escape(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(value)


def is_number(value: Any) -> bool:
    """True for an int or float (not a bool): its cell is right-aligned."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None,
          fmt: Formatter = fmt_value) -> str:
    """An HTML table; numbers are right-aligned and every cell goes through ``fmt``."""
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for cell in row:
            cls = ' class="num"' if is_number(cell) else ""
            cells.append(f"<td{cls}>{fmt(cell)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def figure(path: Path, title: str, caption: str) -> str:
    """The PNG at ``path`` embedded as data, with its title, caption and file name."""
    path = Path(path)
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(title)}">'
            f"<figcaption><b>{escape(title)}.</b> {escape(caption)} "
            f"<i>(file: {escape(path.name)})</i></figcaption></figure>")


def details(title: str, data: Any) -> str:
    """A collapsed block with ``data`` as indented JSON."""
    return (f"<details><summary>{escape(title)}</summary><pre>"
            f"{escape(json.dumps(data, indent=2))}</pre></details>")


def page_head(title: str) -> list[str]:
    """The page's opening lines up to and including its ``<h1>``."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><main>",
        f"<h1>{escape(title)}</h1>",
    ]


def written_at() -> str:
    """Now, as the pages' lead line states when they were written."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
