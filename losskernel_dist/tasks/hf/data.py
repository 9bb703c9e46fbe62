"""The text rows of the Hugging Face task: a ``train`` or ``eval`` spec, loaded with ``datasets``.

A spec is a mapping, either local files

    {data_files: PATH or [PATH, ...], text_field: text, split: train, n: null, seed: 0}

whose format comes from the extension (``.json``/``.jsonl``, ``.txt``, ``.parquet``,
``.csv``; ``datasets`` puts local files in the split ``train``), or a dataset of the
hub

    {name: DATASET, config: CONFIG, split: train, text_field: text, n: null, seed: 0}

``n`` takes a seeded random subset of the rows (kept in file order); ``null`` takes
them all. Besides the text, every column of scalar values (numbers, booleans,
strings) is kept: the eval rows' columns become per-sample attributes, and an
integer ``label`` column becomes the labels (with the names of a ``ClassLabel``
feature as label names). ``datasets`` is imported only here, when rows are loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from losskernel_dist.errors import MissingFileError, TaskError

FORMATS = {".json": "json", ".jsonl": "json", ".txt": "text", ".text": "text",
           ".parquet": "parquet", ".csv": "csv"}
LOCAL_KEYS = {"data_files", "text_field", "split", "n", "seed"}
HUB_KEYS = {"name", "config", "text_field", "split", "n", "seed"}
LABEL_COLUMN = "label"


@dataclass
class TextRows:
    """Rows of one spec: their texts, their row numbers in the split, and scalar columns."""

    texts: list[str]
    rows: np.ndarray  # index of each row in the loaded split (after no filtering)
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    label_names: list[str] | None = None  # names of a ClassLabel ``label`` column
    source: str = ""  # what was loaded, for messages

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, keep: np.ndarray) -> TextRows:
        """The rows at positions ``keep`` (an index or boolean array)."""
        keep = np.asarray(keep)
        if keep.dtype == bool:
            keep = np.flatnonzero(keep)
        return TextRows([self.texts[int(i)] for i in keep], self.rows[keep],
                        {k: v[keep] for k, v in self.columns.items()}, self.label_names,
                        self.source)

    def labels(self) -> np.ndarray | None:
        """The integer ``label`` column, or None when there is none (or it is not integer)."""
        values = self.columns.get(LABEL_COLUMN)
        if values is None or values.dtype.kind not in "iu":
            return None
        return values.astype(np.int64)


def _files(spec: Mapping[str, Any], what: str) -> tuple[str, list[str]]:
    """The ``datasets`` builder name of local files and their paths (checked to exist)."""
    raw = spec["data_files"]
    paths = [raw] if isinstance(raw, (str, Path)) else list(raw)
    if not paths or not all(isinstance(p, (str, Path)) for p in paths):
        raise TaskError(f"{what}.data_files must be a path or a list of paths, got {raw!r}")
    resolved = [Path(p).expanduser() for p in paths]
    for p in resolved:
        if not p.is_file():
            raise MissingFileError(f"{what}.data_files: {p} does not exist")
    formats = {FORMATS.get(p.suffix.lower()) for p in resolved}
    if None in formats:
        bad = next(p for p in resolved if p.suffix.lower() not in FORMATS)
        raise TaskError(f"{what}.data_files: cannot tell the format of {bad} from its "
                        f"extension (known: {', '.join(sorted(FORMATS))})")
    if len(formats) > 1:
        raise TaskError(f"{what}.data_files mixes formats {sorted(formats)}: one format per set")
    return formats.pop(), [str(p) for p in resolved]


def check_spec(spec: Any, what: str) -> dict[str, Any]:
    """The spec with its defaults, or a TaskError naming the key that is wrong."""
    if not isinstance(spec, Mapping):
        raise TaskError(f"{what} must be a mapping like {{data_files: PATH, text_field: text}} "
                        f"or {{name: DATASET, split: train}}, got {spec!r}")
    spec = dict(spec)
    if ("data_files" in spec) == ("name" in spec):
        raise TaskError(f"{what} needs exactly one of data_files (local files) or name "
                        "(a dataset of the hub)")
    known = LOCAL_KEYS if "data_files" in spec else HUB_KEYS
    unknown = sorted(set(spec) - known)
    if unknown:
        raise TaskError(f"{what}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    out = {"text_field": "text", "split": "train", "n": None, "seed": 0, **spec}
    if not isinstance(out["text_field"], str):
        raise TaskError(f"{what}.text_field must be a column name, got {out['text_field']!r}")
    n = out["n"]
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise TaskError(f"{what}.n must be a positive integer or null, got {n!r}")
    if isinstance(out["seed"], bool) or not isinstance(out["seed"], int):
        raise TaskError(f"{what}.seed must be an integer, got {out['seed']!r}")
    return out


def _load(spec: Mapping[str, Any], what: str) -> tuple[Any, str]:
    """The ``datasets.Dataset`` of the spec's split and a description of its source."""
    try:
        import datasets
    except ImportError as exc:
        raise TaskError("the Hugging Face task needs datasets (pip install "
                        f"'losskernel-dist[hf]'): {exc}") from exc
    datasets.disable_progress_bars()
    if "data_files" in spec:
        builder, files = _files(spec, what)
        source = files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} files)"
        load_args: dict[str, Any] = {"path": builder, "data_files": files}
    else:
        source = spec["name"] + (f"/{spec['config']}" if spec.get("config") else "")
        load_args = {"path": spec["name"], "name": spec.get("config")}
    try:
        data = datasets.load_dataset(**load_args, split=spec["split"])
    except (FileNotFoundError, ValueError, OSError, ConnectionError) as exc:
        first = " ".join(str(exc).split())[:300]
        raise TaskError(f"{what}: cannot load {source} split {spec['split']!r}: {first}") from exc
    return data, source


def _scalar_columns(data: Any, text_field: str) -> dict[str, Any]:
    """Name -> feature of the columns holding one number, boolean or string per row."""
    import datasets

    out = {}
    for name, feature in data.features.items():
        if name == text_field:
            continue
        if isinstance(feature, datasets.ClassLabel):
            out[name] = feature
        elif isinstance(feature, datasets.Value) and feature.dtype != "null" and (
                feature.dtype in ("bool", "string", "large_string")
                or feature.dtype.startswith(("int", "uint", "float"))):
            out[name] = feature
    return out


def load_rows(spec: Any, what: str) -> TextRows:
    """The rows a ``train``/``eval`` spec names: seeded subset, texts and scalar columns."""
    import datasets

    spec = check_spec(spec, what)
    data, source = _load(spec, what)
    field_name = spec["text_field"]
    if field_name not in data.column_names:
        raise TaskError(f"{what}.text_field {field_name!r} is not a column of {source} "
                        f"(columns: {', '.join(data.column_names)})")
    total = len(data)
    if total == 0:
        raise TaskError(f"{what}: {source} split {spec['split']!r} has no rows")
    rows = np.arange(total)
    if spec["n"] is not None:
        if spec["n"] > total:
            raise TaskError(f"{what}.n is {spec['n']} but {source} has {total} rows")
        rng = np.random.default_rng([int(spec["seed"]), 13])
        rows = np.sort(rng.choice(total, size=spec["n"], replace=False))
        data = data.select(rows)
    texts = data[field_name]
    if not all(isinstance(t, str) for t in texts):
        bad = next(type(t).__name__ for t in texts if not isinstance(t, str))
        raise TaskError(f"{what}.text_field {field_name!r} holds {bad} values, not text")
    features = _scalar_columns(data, field_name)
    columns = {name: np.asarray(data[name]) for name in features}
    label = features.get(LABEL_COLUMN)
    names = list(label.names) if isinstance(label, datasets.ClassLabel) else None
    return TextRows(list(texts), rows.astype(np.int64), columns, names, source)

