"""The loss of the Hugging Face task: next-token cross-entropy per sequence or per token.

One callable serves both kinds of batch the sampler hands it (``tokens.py``):

* a sequence batch ``[input_ids, attention_mask]`` (the SGLD minibatches, and the
  eval shards of a sequence-level kernel) gives one loss per sequence: the
  cross-entropies of its scored tokens summed (``sum``) or averaged (``mean``);
* a token batch ``[input_ids, attention_mask, sequence, position, token_id]`` (the
  eval shards of a token-level kernel) gives one loss per scored token: each
  distinct sequence of the shard goes through the model once, and token j's loss
  is the cross-entropy of its logits at ``position - 1`` against its id.

So the SGLD steps are the same at both granularities (the minibatch mean of
sequence losses), and with ``sum`` a sequence's loss is the sum of its tokens'
losses, up to float32 rounding. Padding never counts: columns after a batch's
longest sequence are cut, and padded targets are masked out. Logits are turned
into float32 before the cross-entropy, so a bfloat16 model gives float32 losses.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

PER_SEQUENCE = ("sum", "mean")


def _logits(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids.long(), attention_mask=mask.long(), use_cache=False)
    return out.logits if hasattr(out, "logits") else out[0]


class CausalLMLoss:
    """``loss(model, batch) -> Tensor[B]``; ``per_sequence`` is 'sum' or 'mean'."""

    def __init__(self, per_sequence: str = "sum") -> None:
        self.per_sequence = per_sequence

    def __call__(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        if len(batch) == 2:
            return self.sequence_losses(model, batch[0], batch[1])
        return self.token_losses(model, *batch)

    def sequence_losses(self, model: torch.nn.Module, ids: torch.Tensor,
                        mask: torch.Tensor) -> torch.Tensor:
        """[B] summed (or mean) cross-entropy of each sequence's scored tokens."""
        width = max(2, int(mask.sum(dim=1).max()))
        ids, mask = ids[:, :width], mask[:, :width]
        logits = _logits(model, ids, mask)  # [B, W, V]; position t predicts token t + 1
        # targets and their mask shifted left by one, so that the logits are used whole
        # (a view, not a copy of the [B, W - 1, V] slice); the last column scores nothing
        targets = F.pad(ids[:, 1:].long(), (0, 1))
        scored = F.pad(mask[:, 1:], (0, 1)).to(torch.float32)
        per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                    targets.reshape(-1), reduction="none")
        total = (per_token.view_as(scored) * scored).sum(dim=1)
        if self.per_sequence == "mean":
            return total / scored.sum(dim=1)
        return total

    def token_losses(self, model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                     sequence: torch.Tensor, position: torch.Tensor,
                     token_id: torch.Tensor) -> torch.Tensor:
        """[B] cross-entropy of each scored token, each distinct sequence run once."""
        unique, inverse = torch.unique(sequence, return_inverse=True)
        order = torch.arange(len(sequence), device=sequence.device)
        first = torch.full((len(unique),), len(sequence), dtype=order.dtype,
                           device=sequence.device)
        first = first.scatter_reduce(0, inverse, order, reduce="amin")
        width = int(position.max()) + 1
        logits = _logits(model, ids[first, :width], mask[first, :width])
        picked = logits[inverse, position - 1]
        return F.cross_entropy(picked.float(), token_id.long(), reduction="none")
