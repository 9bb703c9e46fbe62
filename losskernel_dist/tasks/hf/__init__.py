"""Hugging Face causal language models as a ready-made task (target ``causal_lm``).

    task:
      target: losskernel_dist.tasks.hf:causal_lm
      args:
        model: gpt2                       # a save_pretrained directory or a hub name
        train: {data_files: train.jsonl, text_field: text}
        eval: {data_files: eval.jsonl, text_field: text, n: 1000, seed: 0}
        max_length: 128
        loss: sum                         # or mean, of a sequence's token losses
        granularity: sequence             # or token: one kernel sample per scored token
        sample_params: all                # or ["transformer.h.1.*", ...]

The parts, one module each: ``data`` (the rows of a ``train``/``eval`` spec,
loaded with ``datasets``), ``tokens`` (padded sequences, scored tokens and the
datasets the sampler reads), ``model`` (model and tokenizer, ``sample_params``)
and ``loss`` (cross-entropy per sequence or per token). ``transformers`` and
``datasets`` are imported only when a task is built.

Sequences with no scored token (texts of fewer than two tokens) are dropped from
both sets: their loss would be a constant 0 (``sum``) or undefined (``mean``).
Attributes of a sequence-level kernel: ``row`` (the row in the eval split),
``n_tokens`` (scored tokens), ``text`` (the sequence decoded as the model sees
it) and the eval rows' other scalar columns. Of a token-level kernel: ``sequence``
(index of the sequence among the kept eval sequences), ``position`` (of the token
in it, >= 1), ``token_id``, ``token`` (its text), ``text`` (the token in a window
of its context, marked ⟦so⟧), ``row``, and the columns of its row. An integer
``label`` column gives the labels (each token takes its sequence's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from losskernel_dist.errors import TaskError
from losskernel_dist.task import TEXT_ATTRIBUTE, Task

from .data import LABEL_COLUMN, TextRows, load_rows
from .loss import PER_SEQUENCE, CausalLMLoss
from .model import choose_sampled, load_model, load_tokenizer, position_limit
from .tokens import (
    Encoded,
    ScoredTokens,
    check_vocabulary,
    encode,
    scored_tokens,
    sequence_texts,
    token_texts,
)

GRANULARITIES = ("sequence", "token")

__all__ = ["GRANULARITIES", "CausalLMLoss", "causal_lm"]


def _encode_rows(tokenizer: Any, rows: TextRows, max_length: int, vocab_size: int | None,
                 what: str) -> tuple[TextRows, Encoded]:
    """The rows with at least one scored token, and their tokens; a TaskError when none has."""
    encoded = encode(tokenizer, rows.texts, max_length)
    keep = np.flatnonzero(encoded.scored_per_sequence > 0)
    if keep.size == 0:
        raise TaskError(f"{what} has no scored tokens: each of its {len(rows)} texts "
                        f"({rows.source}) is shorter than 2 tokens after truncation to "
                        f"max_length {max_length}")
    if vocab_size is not None:
        check_vocabulary(encoded, vocab_size, what)
    if keep.size < len(rows):
        return rows.select(keep), encoded.select(keep)
    return rows, encoded


def _attributes(tokenizer: Any, rows: TextRows, encoded: Encoded,
                granularity: str) -> tuple[ScoredTokens | None, dict[str, np.ndarray],
                                           np.ndarray | None]:
    """The token dataset (token level only), the attributes and the labels of the eval set."""
    labels = rows.labels()
    columns = {k: v for k, v in rows.columns.items()
               if not (k == LABEL_COLUMN and labels is not None)}
    if granularity == "sequence":
        attributes = {**columns, "row": rows.rows,
                      "n_tokens": encoded.scored_per_sequence.astype(np.int64),
                      TEXT_ATTRIBUTE: np.asarray(sequence_texts(tokenizer, encoded), dtype=object)}
        return None, attributes, labels
    tokens = scored_tokens(encoded)
    token, window = token_texts(tokenizer, encoded, tokens)
    per_token = {k: v[tokens.sequence] for k, v in columns.items()}
    attributes = {**per_token, "position": tokens.position,
                  "token": np.asarray(token, dtype=object), "sequence": tokens.sequence,
                  "row": rows.rows[tokens.sequence], "token_id": tokens.token_id,
                  TEXT_ATTRIBUTE: np.asarray(window, dtype=object)}
    return (ScoredTokens(encoded, tokens), attributes,
            labels[tokens.sequence] if labels is not None else None)


def causal_lm(
    model: str,
    train: dict[str, Any],
    eval: dict[str, Any],
    tokenizer: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    dtype: str = "float32",
    max_length: int = 128,
    loss: str = "sum",
    granularity: str = "sequence",
    sample_params: str | Sequence[str] = "all",
) -> Task:
    """The loss kernel task of a Hugging Face causal language model.

    model: a ``save_pretrained`` directory or a hub name (``AutoModelForCausalLM``),
        at ``revision``; ``trust_remote_code`` for models with their own code.
    train, eval: the rows SGLD minibatches come from and the kernel's rows
        (``data`` module: local files or a hub dataset, ``text_field``, ``split``,
        seeded subset ``n``).
    tokenizer: a directory or hub name; default the model's. A pad token is set
        when it has none.
    dtype: ``float32`` or ``bfloat16`` weights.
    max_length: tokens per sequence (>= 2): longer texts are truncated.
    loss: ``sum`` or ``mean`` of a sequence's token cross-entropies; the SGLD
        minibatch loss is always the mean of these over the minibatch's sequences.
    granularity: ``sequence`` (one kernel sample per eval sequence) or ``token``
        (one per scored token of the eval sequences).
    sample_params: ``all`` or parameter-name globs: the chains move only those.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise TaskError(f"max_length must be an integer >= 2 (a scored token needs one token "
                        f"of context), got {max_length!r}")
    if loss not in PER_SEQUENCE:
        raise TaskError(f"loss must be one of {', '.join(PER_SEQUENCE)}, got {loss!r}")
    if granularity not in GRANULARITIES:
        raise TaskError(f"granularity must be one of {', '.join(GRANULARITIES)}, "
                        f"got {granularity!r}")
    train_rows = load_rows(train, "train")
    eval_rows = load_rows(eval, "eval")
    lm = load_model(model, revision, trust_remote_code, dtype)
    limit = position_limit(lm)
    if limit is not None and max_length > limit:
        raise TaskError(f"max_length {max_length} exceeds the {limit} positions of the model")
    choose_sampled(lm, sample_params)
    tok = load_tokenizer(tokenizer, model, revision, trust_remote_code)
    vocab = lm.get_input_embeddings().num_embeddings if lm.get_input_embeddings() else None
    train_rows, train_tokens = _encode_rows(tok, train_rows, max_length, vocab, "train")
    eval_rows, eval_tokens = _encode_rows(tok, eval_rows, max_length, vocab, "eval")
    token_set, attributes, labels = _attributes(tok, eval_rows, eval_tokens, granularity)
    return Task(
        model=lm,
        train=train_tokens.sequences(),
        eval=token_set if token_set is not None else eval_tokens.sequences(),
        loss=CausalLMLoss(loss),
        labels=labels,
        attributes=attributes,
        label_names=eval_rows.label_names if labels is not None else None,
    )

