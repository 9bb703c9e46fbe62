"""Tiny Hugging Face models, a tokenizer and a corpus made offline, for the tests and benches
of the Hugging Face task (``losskernel_dist.tasks.hf``).

The corpus is generated English-like text of two kinds (``domain``: counting
sentences and animal sentences, with a ``source`` of several documents each);
the tokenizer is a byte-level BPE trained on it with ``tokenizers`` and saved
with ``save_pretrained`` (it has no pad token, as GPT-2's has not); the models
are GPT-2 and Llama architectures of a few thousand parameters, random or
briefly trained on the corpus, saved with ``save_pretrained``. Everything is
seeded, so two calls give the same files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
ANIMALS = ["cat", "dog", "fox", "owl", "horse", "mouse", "goat", "bee"]
VERBS = ["sees", "chases", "follows", "finds", "hears", "likes"]
PLACES = ["in the barn", "near the river", "under the tree", "on the hill", "at night"]


def sentence(rng: np.random.Generator, domain: str) -> str:
    """One generated sentence of ``domain`` ('count' or 'animals')."""
    if domain == "count":
        a, b = rng.integers(0, 5, size=2)
        return f"{NUMBERS[a]} plus {NUMBERS[b]} is {NUMBERS[a + b]}."
    x, y = rng.choice(len(ANIMALS), size=2, replace=False)
    return (f"the {ANIMALS[x]} {VERBS[rng.integers(len(VERBS))]} the {ANIMALS[y]} "
            f"{PLACES[rng.integers(len(PLACES))]}.")


def corpus(rows: int, sentences_per_row: int = 1, seed: int = 0) -> list[dict[str, Any]]:
    """``rows`` records {text, domain, source, label}: label 0 counting, 1 animals."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(rows):
        domain = "count" if i % 2 == 0 else "animals"
        text = " ".join(sentence(rng, domain) for _ in range(sentences_per_row))
        out.append({"text": text, "domain": domain, "source": f"{domain}-{i % 3}",
                    "label": int(domain == "animals")})
    return out


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def train_tokenizer(folder: Path, texts: list[str], vocab_size: int = 200) -> Any:
    """A byte-level BPE trained on ``texts`` with ``tokenizers``, saved with save_pretrained
    into ``folder``; returns the ``PreTrainedTokenizerFast`` (no pad token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>",
                                  bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.save_pretrained(folder)
    return tok


def gpt2_model(vocab_size: int, layers: int = 2, width: int = 32, heads: int = 2,
               positions: int = 128, dropout: float = 0.0, seed: int = 0) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab_size, n_positions=positions, n_embd=width,
                        n_layer=layers, n_head=heads, resid_pdrop=dropout, embd_pdrop=dropout,
                        attn_pdrop=dropout, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def llama_model(vocab_size: int, layers: int = 2, width: int = 32, heads: int = 2,
                positions: int = 128, seed: int = 0) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=1, max_position_embeddings=positions,
                         bos_token_id=0, eos_token_id=0, pad_token_id=None)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def train_briefly(model: Any, tok: Any, texts: list[str], steps: int, max_length: int = 64,
                  batch: int = 16, lr: float = 3e-3, seed: int = 0) -> Any:
    """``steps`` Adam steps of next-token loss on ``texts`` (deterministic), then eval mode."""
    gen = torch.Generator().manual_seed(seed)
    limit = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    max_length = min(max_length, limit)
    enc = tok(texts, truncation=True, max_length=max_length, padding="longest",
              return_tensors="pt") if tok.pad_token else None
    if enc is None:
        tok.pad_token = tok.eos_token
        enc = tok(texts, truncation=True, max_length=max_length, padding="longest",
                  return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(ids), (batch,), generator=gen)
        out = model(input_ids=ids[idx], attention_mask=mask[idx], labels=labels[idx])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return model.eval()


def make_lm(folder: Path, arch: str = "gpt2", texts: list[str] | None = None,
            train_steps: int = 0, vocab_size: int = 200, **model_args: Any) -> Path:
    """A model directory (weights, config, tokenizer) made by save_pretrained; returns it."""
    texts = texts if texts is not None else [r["text"] for r in corpus(200)]
    tok = train_tokenizer(folder, texts, vocab_size)
    build = {"gpt2": gpt2_model, "llama": llama_model}[arch]
    model = build(len(tok), **model_args)
    if train_steps:
        train_briefly(model, tok, texts, train_steps)  # (the saved tokenizer has no pad)
    model.save_pretrained(folder)
    return folder
