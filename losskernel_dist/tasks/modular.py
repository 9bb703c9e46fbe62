"""The paper's Section 3 task: one transformer trained on modular addition and division.

Two operations mod a prime p (p = 97 in the paper), each with its own tokens so
that nothing but the vocabulary tells the model which operation to perform:

    addition:  operands a, b -> tokens 0..p-1,    '=' -> 2p,     result c -> token c
    division:  operands a, b -> tokens p..2p-1,   '=' -> 2p + 1, result c -> token p + c

A sample is the sequence ``[a, b, =]``; the target is the result token, read off
the last position, out of logits over the whole vocabulary (size 2p + 2).
Division is ``a / b = a * b^{-1} mod p`` and excludes b = 0.

The model is the two-layer decoder-only transformer of Power et al. (2022)'s
grokking experiments (width 128, 4 heads, MLP 512, learned positional
embedding, causal attention; pre-LayerNorm here). It is written with plain
tensor operations, no in-place parameter updates and no data-dependent control
flow, so that the sampler can evaluate it under ``torch.func.functional_call``
and ``torch.func.vmap`` over stacked parameters.

``build`` loads a trained checkpoint (by default the one shipped in
``tasks/data``), rebuilds its exact training set and draws the N evaluation
samples equally from both operations; it is the ``task.target`` of the example
config, ``losskernel_dist.tasks.modular:build``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from losskernel_dist.errors import MissingFileError, TaskError
from losskernel_dist.task import Task

DEFAULT_P = 97
OPERATIONS: tuple[str, str] = ("addition", "division")
ADDITION, DIVISION = 0, 1
SEQ_LEN = 3
EVAL_POOLS = ("all", "train", "heldout")
EVAL_STREAM = 0x6576616C  # "eval": keeps the eval draw independent of the split draw
CHECKPOINT_FORMAT = "losskernel_dist.modular"
CHECKPOINT_VERSION = 1
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "data" / "modular_p97.pt"


# --------------------------------------------------------------------------- data


def vocab_size(p: int) -> int:
    """Size of the shared vocabulary: p operand/result tokens per operation plus two '='."""
    return 2 * p + 2


def _check_prime(p: int) -> None:
    """Division needs every nonzero b to be invertible mod p, i.e. p prime."""
    if not isinstance(p, int) or p < 2 or any(p % d == 0 for d in range(2, math.isqrt(p) + 1)):
        raise TaskError(f"p must be a prime >= 2 (division needs inverses mod p), got {p!r}")


@dataclass(frozen=True)
class ModularPairs:
    """Every (operation, a, b) of the task with its result, as aligned int64 tensors.

    ``a``, ``b`` and ``result`` are numbers in 0..p-1; ``tokens`` and ``targets``
    are their encodings in the operation's own vocabulary.
    """

    p: int
    operation: Tensor
    a: Tensor
    b: Tensor
    result: Tensor

    def __len__(self) -> int:
        return int(self.operation.shape[0])

    @property
    def tokens(self) -> Tensor:
        """Inputs ``[a, b, =]`` as LongTensor[M, 3]."""
        offset = self.operation * self.p
        eq = 2 * self.p + self.operation
        return torch.stack([self.a + offset, self.b + offset, eq], dim=1)

    @property
    def targets(self) -> Tensor:
        """Result tokens as LongTensor[M], in the operation's own output vocabulary."""
        return self.result + self.operation * self.p

    def subset(self, index: Tensor) -> ModularPairs:
        """The pairs selected by an index or boolean mask, in that order."""
        return ModularPairs(
            self.p, self.operation[index], self.a[index], self.b[index], self.result[index]
        )


def enumerate_pairs(p: int = DEFAULT_P) -> ModularPairs:
    """All p*p addition pairs, then all p*(p-1) division pairs (b != 0), a-major order."""
    _check_prime(p)
    grid_a, grid_b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    add_a, add_b = grid_a.reshape(-1), grid_b.reshape(-1)
    add_c = (add_a + add_b) % p
    keep = grid_b.reshape(-1) != 0
    div_a, div_b = add_a[keep], add_b[keep]
    inverse = torch.tensor([0] + [pow(x, -1, p) for x in range(1, p)], dtype=torch.int64)
    div_c = (div_a * inverse[div_b]) % p
    operation = torch.cat([torch.full_like(add_a, ADDITION), torch.full_like(div_a, DIVISION)]).to(
        torch.int64
    )
    return ModularPairs(
        p=p,
        operation=operation,
        a=torch.cat([add_a, div_a]).to(torch.int64),
        b=torch.cat([add_b, div_b]).to(torch.int64),
        result=torch.cat([add_c, div_c]).to(torch.int64),
    )


def split_pairs(pairs: ModularPairs, train_fraction: float, seed: int) -> Tensor:
    """Boolean mask of the training pairs: round(fraction * count) of each operation.

    Each operation is split separately (stratified), so both are trained on the
    same fraction of their pairs. Deterministic given ``seed``.
    """
    if not 0.0 < float(train_fraction) <= 1.0:
        raise TaskError(f"train_fraction must be in (0, 1], got {train_fraction!r}")
    generator = torch.Generator().manual_seed(int(seed))
    mask = torch.zeros(len(pairs), dtype=torch.bool)
    for op in range(len(OPERATIONS)):
        idx = torch.nonzero(pairs.operation == op).squeeze(1)
        n_train = round(float(train_fraction) * len(idx))
        perm = torch.randperm(len(idx), generator=generator)
        mask[idx[perm[:n_train]]] = True
    return mask


def sample_eval_indices(
    pairs: ModularPairs, in_train: Tensor, n_eval: int, eval_seed: int, eval_from: str
) -> Tensor:
    """Indices of n_eval pairs, n_eval/2 per operation, without replacement.

    Addition first, then division, each in enumeration (a, b) order. The pool is
    all pairs, only training pairs, or only held-out pairs.
    """
    if eval_from not in EVAL_POOLS:
        raise TaskError(f"task.args.eval_from must be one of {', '.join(EVAL_POOLS)}, "
                        f"got {eval_from!r}")
    if isinstance(n_eval, bool) or not isinstance(n_eval, (int, np.integer)) or n_eval < 2:
        raise TaskError(f"task.args.n_eval must be an even integer >= 2 (half addition, half "
                        f"division), got {n_eval!r}: set it to an even number of samples")
    if n_eval % 2:
        raise TaskError(
            f"task.args.n_eval must be even (drawn equally from addition and division), "
            f"got {n_eval}: use {n_eval - 1} or {n_eval + 1}"
        )
    per_op = int(n_eval) // 2
    generator = _eval_generator(int(eval_seed))
    chosen = []
    for op, name in enumerate(OPERATIONS):
        pool = pairs.operation == op
        if eval_from == "train":
            pool &= in_train
        elif eval_from == "heldout":
            pool &= ~in_train
        idx = torch.nonzero(pool).squeeze(1)
        if per_op > len(idx):
            raise TaskError(
                f"task.args.n_eval={n_eval} needs {per_op} {name} samples but the {eval_from!r} pool "
                f"has only {len(idx)} (largest allowed n_eval here: "
                f"{2 * _smallest_pool(pairs, in_train, eval_from)})"
            )
        perm = torch.randperm(len(idx), generator=generator)[:per_op]
        chosen.append(torch.sort(idx[perm]).values)
    return torch.cat(chosen)


def _eval_generator(eval_seed: int) -> torch.Generator:
    """Generator for the evaluation draw, on a stream of its own.

    Seeding it with eval_seed directly would replay split_pairs' permutations
    whenever eval_seed equals the split seed, and the draw would then be
    mostly training pairs instead of a uniform sample of the pool.
    """
    seed = np.random.SeedSequence([eval_seed, EVAL_STREAM]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(seed))


def _smallest_pool(pairs: ModularPairs, in_train: Tensor, eval_from: str) -> int:
    """Size of the smaller per-operation pool, for the error message."""
    sizes = []
    for op in range(len(OPERATIONS)):
        pool = pairs.operation == op
        if eval_from == "train":
            pool &= in_train
        elif eval_from == "heldout":
            pool &= ~in_train
        sizes.append(int(pool.sum()))
    return min(sizes)


# -------------------------------------------------------------------------- model


class DecoderBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(ln1(x)), then x + mlp(ln2(x)), causal attention.

    Attention is spelled out (matmul, additive causal mask, softmax) rather than
    using nn.MultiheadAttention so that torch.func transforms see only plain ops.
    """

    def __init__(self, d_model: int, n_heads: int, d_mlp: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise TaskError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_mlp)
        self.fc2 = nn.Linear(d_mlp, d_model)

    def _heads(self, x: Tensor) -> Tensor:
        """[B, T, D] -> [B, H, T, D/H]."""
        batch, length, width = x.shape
        return x.reshape(batch, length, self.n_heads, width // self.n_heads).transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor, last_only: bool = False) -> Tensor:
        """x: [B, T, D]; mask: additive [T, T]. With last_only, return only position T-1.

        The last position attends to every position, so computing only its query
        (and its MLP) gives exactly the full block's output there, for less work.
        """
        h = self.ln1(x)
        if last_only:
            # 2-D [B, D] for the single position: under vmap a [B, 1, D] input to a
            # Linear with batched weights takes a broadcast path that materialises the
            # weight once per sample (B copies); [B, D] stays one batched GEMM.
            q = self.query(h[:, -1])[:, None]
            mask, x = mask[-1:], x[:, -1]
        else:
            q = self.query(h)
        q, k, v = self._heads(q), self._heads(self.key(h)), self._heads(self.value(h))
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + mask
        attended = torch.softmax(scores, dim=-1) @ v
        batch, _, length, _ = attended.shape
        attended = attended.transpose(1, 2).reshape(batch, length, -1)
        if last_only:
            attended = attended[:, 0]
        x = x + self.proj(attended)
        x = x + self.fc2(F.relu(self.fc1(self.ln2(x))))
        return x[:, None] if last_only else x


class ModularTransformer(nn.Module):
    """Two-layer decoder-only transformer (Power et al. 2022), logits at the last position.

    forward(tokens: LongTensor[B, T]) -> logits[B, vocab_size].
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 128,
        n_heads: int = 4,
        d_mlp: int = 512,
        n_layers: int = 2,
        seq_len: int = SEQ_LEN,
    ) -> None:
        super().__init__()
        self.hparams: dict[str, int] = {
            "vocab_size": int(vocab_size),
            "d_model": int(d_model),
            "n_heads": int(n_heads),
            "d_mlp": int(d_mlp),
            "n_layers": int(n_layers),
            "seq_len": int(seq_len),
        }
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos_embed = nn.Parameter(torch.zeros(seq_len, d_model))
        self.blocks = nn.ModuleList(
            [DecoderBlock(d_model, n_heads, d_mlp) for _ in range(n_layers)]
        )
        self.ln_final = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, vocab_size, bias=False)
        causal = torch.full((seq_len, seq_len), float("-inf")).triu(1)
        self.register_buffer("causal_mask", causal, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-style init: weights N(0, 0.02), biases 0, LayerNorm identity.

        A small initial scale helps grokking (the weights have less norm for
        weight decay to remove before the generalizing solution wins).
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.pos_embed, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits over the whole vocabulary at the last position, [B, vocab_size]."""
        length = tokens.shape[-1]
        x = self.embed(tokens) + self.pos_embed[:length]
        mask = self.causal_mask[:length, :length]
        n_blocks = len(self.blocks)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, last_only=i == n_blocks - 1)
        return self.unembed(self.ln_final(x[:, -1]))


def modular_loss(model: nn.Module, batch: Any) -> Tensor:
    """Per-sample cross-entropy, Tensor[B]; batch is ``[tokens, targets]`` from a DataLoader."""
    tokens, targets = batch[0], batch[1]
    return F.cross_entropy(model(tokens), targets, reduction="none")


# --------------------------------------------------------------------- checkpoint


_NOT_A_CHECKPOINT = ("task.args.checkpoint must be a file written by 'losskernel train-modular "
                     "--out PATH' (or leave it out for the shipped one)")


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0]


def load_checkpoint(checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Read a checkpoint written by ``train_modular`` (default: the shipped one).

    Loaded with ``weights_only=True``: a checkpoint is plain tensors, numbers,
    strings, lists and dicts, so nothing in it can run code.
    """
    path = DEFAULT_CHECKPOINT if checkpoint is None else Path(checkpoint).expanduser()
    if not path.is_file():
        hint = (
            "the package's shipped checkpoint is missing; reinstall or train one with "
            "'losskernel train-modular --out PATH'"
            if checkpoint is None
            else "train one with 'losskernel train-modular --out PATH' or pass an existing file"
        )
        raise MissingFileError(f"modular checkpoint not found: {path} ({hint})")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise TaskError(f"cannot read modular checkpoint {path} ({type(exc).__name__}; "
                        f"--debug shows why): {_NOT_A_CHECKPOINT}") from exc
    if not isinstance(ckpt, dict):
        raise TaskError(f"{path} is not a modular-task checkpoint (not a dict): "
                        f"{_NOT_A_CHECKPOINT}")
    missing = [k for k in ("model", "state_dict", "p", "split") if k not in ckpt]
    if missing:
        raise TaskError(f"{path} is not a modular-task checkpoint (missing keys {missing}): "
                        f"{_NOT_A_CHECKPOINT}")
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> ModularTransformer:
    """Rebuild the model from its stored hyperparameters and weights, in eval mode."""
    try:
        model = ModularTransformer(**ckpt["model"])
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, KeyError, ValueError, RuntimeError) as exc:  # its content, not the code
        raise TaskError(f"{ckpt.get('path', 'the checkpoint')} holds no modular-task model "
                        f"({type(exc).__name__}: {_first_line(exc)}): {_NOT_A_CHECKPOINT}"
                        ) from exc
    return model.eval()


def train_mask_from_checkpoint(ckpt: dict[str, Any], pairs: ModularPairs) -> Tensor:
    """The training-set mask: stored one if present, else rebuilt from seed and fraction."""
    split = ckpt["split"]
    mask = split.get("train_mask")
    if mask is None:
        return split_pairs(pairs, split["train_fraction"], split["seed"])
    mask = torch.as_tensor(mask, dtype=torch.bool)
    if mask.shape != (len(pairs),):
        raise TaskError(
            f"checkpoint train_mask has shape {tuple(mask.shape)}, expected ({len(pairs)},) "
            f"for p={pairs.p}"
        )
    return mask


# --------------------------------------------------------------------------- task


def build(
    checkpoint: str | None = None,
    n_eval: int = 10000,
    eval_seed: int = 0,
    eval_from: str = "all",
) -> Task:
    """The Section 3 Task from a trained checkpoint.

    checkpoint: path written by ``train_modular``; None uses the shipped
        ``tasks/data/modular_p97.pt``.
    n_eval: number of kernel samples, even, half addition and half division.
    eval_seed: seed of the (without-replacement) draw of those samples.
    eval_from: pool they are drawn from: "all" pairs, "train" or "heldout" only.

    Task.train is the checkpoint's exact training set (both operations); labels
    are 0 for addition and 1 for division; attributes carry operation, a, b,
    result (numbers mod p), dividend_zero (division with a == 0, the trivial
    cluster of the paper's Figure 2) and in_train.
    """
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    pairs = enumerate_pairs(int(ckpt["p"]))
    in_train = train_mask_from_checkpoint(ckpt, pairs)
    train = pairs.subset(in_train)
    eval_idx = sample_eval_indices(pairs, in_train, n_eval, eval_seed, eval_from)
    chosen = pairs.subset(eval_idx)
    operation = chosen.operation.numpy()
    attributes = {
        "operation": operation.copy(),
        "a": chosen.a.numpy(),
        "b": chosen.b.numpy(),
        "result": chosen.result.numpy(),
        "dividend_zero": ((chosen.operation == DIVISION) & (chosen.a == 0)).long().numpy(),
        "in_train": in_train[eval_idx].long().numpy(),
    }
    return Task(
        model=model,
        train=TensorDataset(train.tokens, train.targets),
        eval=TensorDataset(chosen.tokens, chosen.targets),
        loss=modular_loss,
        labels=operation,
        attributes=attributes,
        label_names=list(OPERATIONS),
        describe=describe_pairs(chosen),
    )


def describe_pairs(pairs: ModularPairs) -> Callable[[int], str]:
    """``describe(j)``: pair j as the equation it asks for, ``"a + b = c"`` or ``"a / b = c"``
    (numbers mod p; the explorer shows it for each sample)."""
    ops = pairs.operation.tolist()
    a, b, c = pairs.a.tolist(), pairs.b.tolist(), pairs.result.tolist()

    def describe(j: int) -> str:
        return f"{a[j]} {'/' if ops[j] == DIVISION else '+'} {b[j]} = {c[j]}"

    return describe
