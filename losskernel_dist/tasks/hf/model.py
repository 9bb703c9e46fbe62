"""The model side of the Hugging Face task: loading a causal LM and its tokenizer, and
choosing the parameters the chains move.

``model`` (and ``tokenizer``) is a local directory (what ``save_pretrained`` writes)
or a name on the hub, loaded with ``AutoModelForCausalLM`` / ``AutoTokenizer``
(``revision``, ``trust_remote_code``). Something that looks like a path (it starts
with ``/``, ``.`` or ``~``, or has more than one ``/``) must be a directory here.
The model comes back in eval mode (dropout off) with its key/value cache off.

``sample_params`` keeps ``requires_grad`` only on the parameters whose name matches
one of its globs (any of a tied parameter's names counts); the others are held at
w* by the sampler, which swaps in only the parameters that require gradients.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from losskernel_dist.errors import MissingFileError, TaskError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise TaskError("the Hugging Face task needs transformers (pip install "
                        f"'losskernel-dist[hf]'): {exc}") from exc
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and (
        os.sep in name)


def _source(name: Any, what: str) -> str:
    """A directory or hub name to load from; a MissingFileError for a path that is not there."""
    if not isinstance(name, (str, Path)) or not str(name):
        raise TaskError(f"{what} must be a directory or a hub name, got {name!r}")
    text = str(name)
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise TaskError(f"{what} {text!r} is a file: give the directory save_pretrained wrote")
    if _looks_like_path(text):
        raise MissingFileError(f"{what} directory not found: {path}")
    return text


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:400]


def load_model(model: Any, revision: str | None, trust_remote_code: bool,
               dtype: str) -> torch.nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` in eval mode, cache off."""
    if dtype not in DTYPES:
        raise TaskError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    source = _source(model, "model")
    transformers = _transformers()
    try:
        lm = transformers.AutoModelForCausalLM.from_pretrained(
            source, revision=revision, trust_remote_code=bool(trust_remote_code),
            dtype=DTYPES[dtype])
    except (OSError, ValueError, KeyError) as exc:
        where = "directory" if Path(source).is_dir() else "hub name (no such directory here)"
        raise TaskError(f"cannot load model {source!r} ({where}): {_one_line(exc)}") from exc
    lm.config.use_cache = False
    return lm.eval()


def load_tokenizer(tokenizer: Any, model: Any, revision: str | None,
                   trust_remote_code: bool) -> Any:
    """The tokenizer (the model's by default), padding on the right with a pad token set."""
    source = _source(model if tokenizer is None else tokenizer, "tokenizer")
    transformers = _transformers()
    try:
        tok = transformers.AutoTokenizer.from_pretrained(
            source, revision=revision if tokenizer is None else None,
            trust_remote_code=bool(trust_remote_code))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TaskError(f"cannot load the tokenizer of {source!r}: {_one_line(exc)}") from exc
    if tok.pad_token is None:
        # any id works: padded positions are masked out of every loss
        fallback = tok.eos_token or tok.unk_token or tok.bos_token
        tok.pad_token = fallback if fallback is not None else tok.convert_ids_to_tokens(0)
    tok.padding_side = "right"
    return tok


def position_limit(model: torch.nn.Module) -> int | None:
    """The most positions the model's config allows (absolute position embeddings), if any."""
    config = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def choose_sampled(model: torch.nn.Module, sample_params: str | Sequence[str]) -> list[str]:
    """Freeze every parameter no glob of ``sample_params`` matches; the names kept sampled.

    ``"all"`` keeps every parameter. A tied parameter (one tensor under two names,
    e.g. GPT-2's ``lm_head.weight`` and ``transformer.wte.weight``) is sampled when
    any of its names matches. A glob that matches nothing is a TaskError.
    """
    if sample_params == "all":
        return [n for n, p in model.named_parameters() if p.requires_grad]
    globs = [sample_params] if isinstance(sample_params, str) else sample_params
    if not isinstance(globs, Sequence) or not globs or not all(
            isinstance(g, str) and g for g in globs):
        raise TaskError(f"sample_params must be 'all' or a list of parameter-name globs, "
                        f"got {sample_params!r}")
    names_of: dict[int, list[str]] = {}
    tensors: dict[int, torch.nn.Parameter] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(param), []).append(name)
        tensors[id(param)] = param
    for glob in globs:
        if not any(fnmatch.fnmatchcase(n, glob) for names in names_of.values() for n in names):
            some = [names[0] for names in names_of.values()][:3]
            raise TaskError(f"sample_params: {glob!r} matches no parameter of the model "
                            f"(names look like {', '.join(some)})")
    kept = []
    for key, names in names_of.items():
        chosen = any(fnmatch.fnmatchcase(n, g) for n in names for g in globs)
        tensors[key].requires_grad_(chosen and tensors[key].requires_grad)
        if tensors[key].requires_grad:
            kept.append(names[0])
    if not kept:
        raise TaskError(f"sample_params {list(globs)} match only parameters that do not "
                        "require gradients: nothing would be sampled")
    return kept
