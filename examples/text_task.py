"""Bring your own model, text: the loss kernel of a small GPT-style language model.

A complete user task (docs/byom_text.md walks through it). The kernel's samples
are sentences; a sentence's loss is the sum of its next-token cross-entropies,
so two sentences are close when the same weight perturbations make the model
better or worse at predicting both.

* Text: one sentence per line of ``text_file``, or (default) a built-in corpus of
  real English that needs no download: the Zen of Python and the docstrings of
  a few standard-library modules, each a "document" (the ``source`` attribute).
* Tokens: bytes (vocabulary 256 + BOS + PAD), so any text works with no
  tokenizer; a real tokenizer only changes ``encode``.
* Model: a decoder-only transformer in plain torch (token and position
  embeddings, pre-LayerNorm blocks with causal self-attention, untied
  unembedding), written with ordinary tensor operations so that the sampler
  can call it under ``torch.func.functional_call`` and ``vmap``.
* Weights: trained here, deterministically, for ``train_steps`` Adam steps
  (a few seconds on a CPU), or loaded from ``checkpoint``
  (``python examples/text_task.py --out model.pt`` writes one).
* ``trainable``: optional name prefixes of the parameters to sample (e.g.
  ``["blocks.1."]``); the others get ``requires_grad=False`` and stay at w*,
  the usual way to probe one part of a large model.
* ``build_windows``: the same corpus and model as fixed-length windows of
  ``seq_len`` bytes (every sequence full, no padding), the input shape of
  devinterp's ``bif``; ``bench/devinterp.py`` uses it.

Config: ``configs``-style YAML with ``task.target: examples.text_task:build``;
run it from the repository root with ``python -m losskernel_dist.cli run
CONFIG`` (``python -m`` puts the current folder on the import path; the
``losskernel`` script does not, so use ``PYTHONPATH=.`` with it).
"""

from __future__ import annotations

import argparse
import codecs
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from losskernel_dist import Task

BOS, PAD = 256, 257
VOCAB = 258
# Standard-library modules whose docstrings are mostly prose (always installed, no side effects).
CORPUS_MODULES = ("pdb", "configparser", "socketserver", "io", "cmd", "site", "timeit", "sched",
                  "difflib", "hashlib", "doctest", "struct", "csv", "statistics", "tempfile", "copy")
CODE_LIKE = re.compile(r">>>|[{}\[\]=<>]|\(\)|::")


# --------------------------------------------------------------------------- text


def builtin_corpus() -> list[tuple[str, str]]:
    """(sentence, source) pairs: the Zen of Python and some standard-library docstrings.

    Real English that ships with every Python; no download. Sentences are split
    at '.', '!' or '?' followed by whitespace, and at blank lines; only
    prose-like ones are kept (30-160 characters, capitalised, ending a
    sentence, no code). About 250 sentences from 17 sources.
    """
    import contextlib
    import importlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
        import this
    out = [(line, "zen") for line in codecs.decode(this.s, "rot13").splitlines()[2:] if line]
    for name in CORPUS_MODULES:
        doc = importlib.import_module(name).__doc__ or ""
        for part in re.split(r"(?<=[.!?])\s+|\n\s*\n", doc):
            sentence = " ".join(part.split())
            if (30 <= len(sentence) <= 160 and sentence[0].isupper() and sentence[-1] in ".!?"
                    and not CODE_LIKE.search(sentence)):
                out.append((sentence, name))
    return out


def read_corpus(text_file: str | None) -> list[tuple[str, str]]:
    """Sentences with their source: one per non-empty line of ``text_file``, or built in."""
    if text_file is None:
        return builtin_corpus()
    path = Path(text_file).expanduser()
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [(line, path.stem) for line in lines if line]


def source_names(text_file: str | None = None) -> list[str]:
    """The document names that the ``source`` attribute indexes, sorted."""
    return sorted({src for _, src in read_corpus(text_file)})


def encode(sentences: list[str], max_len: int) -> tuple[Tensor, Tensor]:
    """Byte tokens [M, max_len + 1] (BOS, bytes, PAD...) and the target mask [M, max_len].

    Position t predicts token t + 1; ``mask[m, t]`` is 1 where that target is a
    real byte of sentence m (sentences longer than ``max_len`` bytes are cut).
    """
    tokens = torch.full((len(sentences), max_len + 1), PAD, dtype=torch.long)
    mask = torch.zeros((len(sentences), max_len), dtype=torch.float32)
    for m, sentence in enumerate(sentences):
        data = list(sentence.encode("utf-8"))[:max_len]
        tokens[m, 0] = BOS
        tokens[m, 1:len(data) + 1] = torch.tensor(data, dtype=torch.long)
        mask[m, :len(data)] = 1.0
    return tokens, mask


# -------------------------------------------------------------------------- model


class Block(nn.Module):
    """Pre-LayerNorm transformer block with causal self-attention (plain tensor ops)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(width, dim=-1)
        q, k, v = (t.reshape(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + mask
        att = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(batch, length, width)
        x = x + self.proj(att)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyGPT(nn.Module):
    """Decoder-only language model: logits [B, T, VOCAB] for tokens [B, T]."""

    def __init__(self, width: int = 64, heads: int = 4, layers: int = 2, context: int = 96) -> None:
        super().__init__()
        self.hparams = {"width": width, "heads": heads, "layers": layers, "context": context}
        self.embed = nn.Embedding(VOCAB, width)
        self.pos = nn.Parameter(torch.randn(context, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.unembed = nn.Linear(width, VOCAB, bias=False)
        causal = torch.full((context, context), float("-inf")).triu(1)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[-1]
        x = self.embed(tokens) + self.pos[:length]
        for block in self.blocks:
            x = block(x, self.causal[:length, :length])
        return self.unembed(self.ln(x))


def sequence_loss(model: nn.Module, batch: Any) -> Tensor:
    """Per-sequence loss, Tensor[B]: next-token cross-entropies summed over real tokens.

    ``batch`` is ``[tokens, mask]`` as a DataLoader collates the TensorDataset.
    Padding positions are masked out, so a sentence's loss does not depend on
    how much padding follows it. (For a per-token mean, divide by mask.sum(1).)
    """
    tokens, mask = batch[0], batch[1]
    logits = model(tokens[:, :-1])
    per_token = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
    return (per_token * mask).sum(dim=1)


# ----------------------------------------------------------------------- training


def train_model(
    tokens: Tensor, mask: Tensor, hparams: dict[str, int], steps: int, seed: int,
    lr: float = 3e-3, batch_size: int = 32,
) -> TinyGPT:
    """Adam on the mean per-token loss, seeded minibatches; deterministic on one machine."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyGPT(**hparams)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(len(tokens), (min(batch_size, len(tokens)),), generator=generator)
        loss = sequence_loss(model, [tokens[idx], mask[idx]]).sum() / mask[idx].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


# --------------------------------------------------------------------------- task


def _trained_or_loaded(
    checkpoint: str | None, tokens: Tensor, mask: Tensor, hparams: dict, steps: int, seed: int
) -> TinyGPT:
    """The model saved in ``checkpoint`` (``{"hparams", "state_dict"}``), else trained here."""
    if checkpoint is None:
        return train_model(tokens, mask, hparams, steps, seed)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = TinyGPT(**saved["hparams"])
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def _eval_subset(n: int, n_eval: int | None, eval_seed: int, what: str) -> np.ndarray:
    """Sorted indices of the ``n_eval`` kernel samples, a seeded subset of ``n`` (all if None)."""
    if n_eval is None:
        return np.arange(n)
    if not 0 < n_eval <= n:
        raise ValueError(f"n_eval={n_eval} but the corpus gives {n} {what}")
    return np.sort(np.random.default_rng(eval_seed).choice(n, size=n_eval, replace=False))


def build(
    text_file: str | None = None,
    max_len: int = 64,
    n_eval: int | None = None,
    eval_seed: int = 0,
    checkpoint: str | None = None,
    train_steps: int = 200,
    seed: int = 0,
    width: int = 48,
    layers: int = 2,
    trainable: list[str] | None = None,
) -> Task:
    """The text Task: every sentence is a training sample; the kernel is over ``n_eval`` of them.

    text_file: one sentence per line (None: the built-in corpus).
    max_len: bytes kept per sentence (the model's context is max_len).
    n_eval: kernel samples, a seeded subset of the sentences (None: all).
    checkpoint: a file written by ``main`` (``--out``); None trains here.
    train_steps, seed, width, layers: the training run when there is no checkpoint.
    trainable: parameter-name prefixes to sample; None samples every parameter.

    Attributes: ``source`` (index into ``source_names(text_file)``, the sorted
    document names) and ``n_bytes`` (the sentence's length in tokens).
    """
    corpus = read_corpus(text_file)
    sentences = [s for s, _ in corpus]
    sources = sorted({src for _, src in corpus})
    source = np.array([sources.index(src) for _, src in corpus], dtype=np.int64)
    tokens, mask = encode(sentences, max_len)
    hparams = {"width": width, "heads": 4, "layers": layers, "context": max_len}
    model = _trained_or_loaded(checkpoint, tokens, mask, hparams, train_steps, seed)
    if trainable is not None:
        for name, p in model.named_parameters():
            p.requires_grad_(any(name.startswith(prefix) for prefix in trainable))
    chosen = _eval_subset(len(sentences), n_eval, eval_seed, "sentences")
    index = torch.from_numpy(chosen)
    return Task(
        model=model,
        train=TensorDataset(tokens, mask),
        eval=TensorDataset(tokens[index], mask[index]),
        loss=sequence_loss,
        # No labels: a language model has no class whose unembedding row would couple
        # same-label samples (the reason the analysis drops same-label neighbours), and
        # leaving the source out of the labels lets the analysis measure its lift.
        attributes={
            "source": source[chosen],
            "n_bytes": mask[index].sum(1).long().numpy(),
        },
    )


def byte_windows(
    text_file: str | None = None, seq_len: int = 16
) -> tuple[Tensor, np.ndarray, list[str]]:
    """The corpus as one byte stream cut into windows: tokens [M, seq_len], source [M], names.

    Sentences are joined with newlines and cut into consecutive, non-overlapping
    windows of ``seq_len`` bytes (no BOS, no padding: every window is full, so all
    ``seq_len - 1`` next-token targets are real). ``source`` is the document of a
    window's first byte. The built-in corpus gives 1,211 windows of 16 bytes.
    """
    corpus = read_corpus(text_file)
    names = sorted({src for _, src in corpus})
    data: list[int] = []
    owner: list[int] = []
    for sentence, src in corpus:
        chunk = list((sentence + "\n").encode("utf-8"))
        data += chunk
        owner += [names.index(src)] * len(chunk)
    m = len(data) // seq_len
    tokens = torch.tensor(data[: m * seq_len], dtype=torch.long).reshape(m, seq_len)
    source = np.asarray(owner[: m * seq_len:seq_len], dtype=np.int64)
    return tokens, source, names


def build_windows(
    text_file: str | None = None,
    seq_len: int = 16,
    n_eval: int | None = None,
    eval_seed: int = 0,
    checkpoint: str | None = None,
    train_steps: int = 200,
    seed: int = 0,
    width: int = 128,
    layers: int = 2,
    heads: int = 4,
) -> Task:
    """Fixed-length variant of ``build``: windows of ``seq_len`` bytes (``byte_windows``).

    The shape of a typical language-model data set (every sequence the same
    length, no padding), used by ``bench/devinterp.py`` because devinterp's
    ``bif`` takes only fixed-length ``input_ids``. The loss is ``sequence_loss``
    (token losses summed over the ``seq_len - 1`` targets). The defaults give a
    2-layer, width-128 model (about 0.46 M parameters) with context ``seq_len``.
    ``checkpoint``: a file with ``{"hparams", "state_dict"}`` (as ``main`` writes);
    None trains here for ``train_steps`` Adam steps.
    """
    tokens, source, _ = byte_windows(text_file, seq_len)
    mask = torch.ones((len(tokens), seq_len - 1), dtype=torch.float32)
    hparams = {"width": width, "heads": heads, "layers": layers, "context": seq_len}
    model = _trained_or_loaded(checkpoint, tokens, mask, hparams, train_steps, seed)
    chosen = _eval_subset(len(tokens), n_eval, eval_seed, f"windows of {seq_len} bytes")
    index = torch.from_numpy(chosen)
    return Task(
        model=model,
        train=TensorDataset(tokens, mask),
        eval=TensorDataset(tokens[index], mask[index]),
        loss=sequence_loss,
        attributes={"source": source[chosen]},
    )


def main(argv: list[str] | None = None) -> int:
    """``python examples/text_task.py --out model.pt``: train on the corpus and save."""
    p = argparse.ArgumentParser(description="train the example language model and save it")
    p.add_argument("--out", required=True)
    p.add_argument("--text-file", default=None)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    tokens, mask = encode([s for s, _ in read_corpus(args.text_file)], args.max_len)
    hparams = {"width": 48, "heads": 4, "layers": 2, "context": args.max_len}
    model = train_model(tokens, mask, hparams, args.steps, args.seed)
    with torch.no_grad():
        per_token = sequence_loss(model, [tokens, mask]).sum() / mask.sum()
    torch.save({"hparams": model.hparams, "state_dict": model.state_dict()}, args.out)
    print(f"{len(tokens)} sentences, mean loss {float(per_token):.3f} nats/byte -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
