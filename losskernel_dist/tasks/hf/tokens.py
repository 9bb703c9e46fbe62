"""Tokenised text for the Hugging Face task: padded sequences, their scored tokens, and the
datasets the sampler reads.

A sequence is the tokenizer's ids of one text, truncated to ``max_length`` and
right-padded to the longest sequence of its set (right padding keeps every real
token at its own position: causal attention never lets a real position see a
later pad). Position t >= 1 of a sequence is a **scored token** when it is not
padding: the model predicts it from positions < t. A sequence's loss is its
scored tokens' cross-entropies summed (or averaged); a token-level kernel has one
sample per scored token.

Datasets (what a default DataLoader yields is what ``loss.CausalLMLoss`` reads):

* ``sequences``: a ``TensorDataset`` of ``(input_ids int32 [L], attention_mask bool [L])``,
  the SGLD minibatches and the sequence-level eval set.
* ``ScoredTokens``: item j is ``(input_ids, attention_mask, sequence, position,
  token_id)`` of scored token j, in sequence order then position order; the row
  tensors are views of the sequence they belong to, so the eval shards carry the
  context each token needs and the samples' fingerprint covers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from losskernel_dist.errors import TaskError
from losskernel_dist.task import MARK_CLOSE, MARK_OPEN

CONTEXT_TOKENS = 8  # tokens of context on each side of a token in its ``text`` attribute


@dataclass
class Encoded:
    """Padded token ids of a set of texts: ids int32 [S, L], mask bool [S, L], lengths [S]."""

    ids: torch.Tensor
    mask: torch.Tensor
    lengths: np.ndarray

    @property
    def scored_per_sequence(self) -> np.ndarray:
        """Scored tokens of each sequence: every real position after the first."""
        return np.maximum(self.lengths - 1, 0)

    def select(self, keep: np.ndarray) -> Encoded:
        index = torch.as_tensor(keep, dtype=torch.long)
        width = int(self.lengths[keep].max()) if len(keep) else 1
        return Encoded(self.ids[index, :width].contiguous(), self.mask[index, :width].contiguous(),
                       self.lengths[keep])

    def sequences(self) -> TensorDataset:
        return TensorDataset(self.ids, self.mask)


def encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> Encoded:
    """Token ids of ``texts`` truncated to ``max_length``, right-padded to the longest."""
    batch = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False,
                      add_special_tokens=True)["input_ids"]
    lengths = np.fromiter((len(seq) for seq in batch), dtype=np.int64, count=len(batch))
    width = max(1, int(lengths.max()) if len(lengths) else 1)
    pad = int(tokenizer.pad_token_id)
    ids = np.full((len(batch), width), pad, dtype=np.int32)
    for i, seq in enumerate(batch):
        ids[i, :len(seq)] = seq
    mask = np.arange(width)[None, :] < lengths[:, None]
    return Encoded(torch.from_numpy(ids), torch.from_numpy(mask), lengths)


def check_vocabulary(encoded: Encoded, vocab_size: int, what: str) -> None:
    """A TaskError when the tokenizer produced ids the model has no embedding for."""
    real = encoded.ids[encoded.mask]
    if real.numel() and int(real.max()) >= vocab_size:
        raise TaskError(f"{what}: the tokenizer produced token id {int(real.max())} but the "
                        f"model's vocabulary has {vocab_size} entries: tokenizer and model do "
                        "not belong together")


@dataclass
class TokenIndex:
    """The scored tokens of a set of sequences, in sequence then position order."""

    sequence: np.ndarray  # int64 [N]: index of the token's sequence
    position: np.ndarray  # int64 [N]: the token's position in it (>= 1)
    token_id: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.sequence)


def scored_tokens(encoded: Encoded) -> TokenIndex:
    """Every position t >= 1 of every sequence that is not padding."""
    counts = encoded.scored_per_sequence
    sequence = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    position = np.arange(len(sequence)) - np.repeat(starts, counts) + 1
    ids = encoded.ids.numpy()
    return TokenIndex(sequence.astype(np.int64), position.astype(np.int64),
                      ids[sequence, position].astype(np.int64))


class ScoredTokens(Dataset):
    """Item j: ``(input_ids, attention_mask, sequence, position, token_id)`` of scored token j."""

    def __init__(self, encoded: Encoded, tokens: TokenIndex) -> None:
        self.ids, self.mask = encoded.ids, encoded.mask
        self.sequence = torch.from_numpy(tokens.sequence)
        self.position = torch.from_numpy(tokens.position)
        self.token_id = torch.from_numpy(tokens.token_id)

    def __len__(self) -> int:
        return len(self.sequence)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, ...]:
        s = int(self.sequence[j])
        return self.ids[s], self.mask[s], self.sequence[j], self.position[j], self.token_id[j]


def sequence_texts(tokenizer: Any, encoded: Encoded) -> list[str]:
    """Each sequence as the model sees it: its real tokens decoded (special tokens kept)."""
    return tokenizer.batch_decode([row[:n].tolist() for row, n in
                                   zip(encoded.ids.numpy(), encoded.lengths, strict=True)])


def token_texts(tokenizer: Any, encoded: Encoded, tokens: TokenIndex,
                context: int = CONTEXT_TOKENS) -> tuple[list[str], list[str]]:
    """Per scored token: its decoded text, and a window of ``context`` tokens either side
    with the token marked (``"left⟦token⟧right"``), for the report's tables and maps."""
    ids = encoded.ids.numpy()
    unique, inverse = np.unique(tokens.token_id, return_inverse=True)
    decoded = tokenizer.batch_decode([[int(t)] for t in unique])
    token = [decoded[i] for i in inverse]
    lefts, rights = [], []
    for s, p in zip(tokens.sequence.tolist(), tokens.position.tolist(), strict=True):
        lefts.append(ids[s, max(0, p - context):p].tolist())
        rights.append(ids[s, p + 1:min(int(encoded.lengths[s]), p + 1 + context)].tolist())
    left_text = tokenizer.batch_decode(lefts)
    right_text = tokenizer.batch_decode(rights)
    window = []
    for s, p, left, mid, right in zip(tokens.sequence.tolist(), tokens.position.tolist(),
                                      left_text, token, right_text, strict=True):
        head = "\u2026" if p - context > 0 else ""
        tail = "\u2026" if p + 1 + context < int(encoded.lengths[s]) else ""
        window.append(f"{head}{left}{MARK_OPEN}{mid}{MARK_CLOSE}{right}{tail}")
    return token, window
