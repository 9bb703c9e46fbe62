"""Train the Section 3 model: one transformer on modular addition and division at once.

AdamW (lr 1e-3, weight decay 1.0, betas (0.9, 0.98), 10 warm-up steps, as in
Power et al. 2022) on minibatches of the training pairs of both operations.
Training runs until the model fits its training set (100% accuracy on both
operations, the paper's stopping rule) and then goes on, as the step budget
allows, until it generalizes (held-out accuracy >= 0.99 on both operations);
it stops at whichever comes first of that or ``steps``.

The final checkpoint is written atomically (temporary file + os.replace) so a
killed run never leaves a truncated file where ``build`` looks. With
``save_every``, intermediate checkpoints ``<stem>_step<NNNNNN>.pt`` (including
step 0, the initialization) are kept for studying the kernel's development over
training. Every checkpoint is loadable by ``losskernel_dist.tasks.modular.build``.

Deterministic given ``seed`` on a given machine and thread count (the seed
fixes the split, the initialization and the minibatch order).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from losskernel_dist.tasks.modular import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    DEFAULT_P,
    OPERATIONS,
    ModularPairs,
    ModularTransformer,
    enumerate_pairs,
    split_pairs,
    vocab_size,
)

DEFAULT_TRAIN_FRACTION = 0.5
DEFAULT_STEPS = 15000
DEFAULT_BATCH_SIZE = 512
BETAS = (0.9, 0.98)
WARMUP_STEPS = 10
TARGET_HELDOUT_ACC = 0.99


@torch.no_grad()
def evaluate(model: ModularTransformer, pairs: ModularPairs, chunk: int = 4096) -> dict[str, Any]:
    """Per-pair correctness and loss of the model on ``pairs`` (no gradients)."""
    was_training = model.training
    model.eval()
    tokens, targets = pairs.tokens, pairs.targets
    correct, losses = [], []
    for start in range(0, len(pairs), chunk):
        logits = model(tokens[start : start + chunk])
        correct.append(logits.argmax(-1) == targets[start : start + chunk])
        losses.append(F.cross_entropy(logits, targets[start : start + chunk], reduction="none"))
    model.train(was_training)
    return {"correct": torch.cat(correct), "loss": torch.cat(losses)}


def accuracy_metrics(
    model: ModularTransformer, pairs: ModularPairs, in_train: torch.Tensor
) -> dict[str, float]:
    """Train/held-out accuracy and mean loss per operation (nan for an empty held-out set)."""
    result = evaluate(model, pairs)
    metrics: dict[str, float] = {}
    for split_name, split_mask in (("train", in_train), ("heldout", ~in_train)):
        for op, op_name in enumerate(OPERATIONS):
            sel = split_mask & (pairs.operation == op)
            count = int(sel.sum())
            acc = float(result["correct"][sel].float().mean()) if count else math.nan
            loss = float(result["loss"][sel].mean()) if count else math.nan
            metrics[f"{split_name}_acc_{op_name}"] = acc
            metrics[f"{split_name}_loss_{op_name}"] = loss
            metrics[f"{split_name}_count_{op_name}"] = float(count)
    return metrics


def _train_fitted(metrics: dict[str, float]) -> bool:
    """Every training pair of both operations is predicted correctly."""
    return all(metrics[f"train_acc_{op}"] == 1.0 for op in OPERATIONS)


def _generalized(metrics: dict[str, float]) -> bool:
    """Held-out accuracy reaches the target on both operations (vacuous if none held out)."""
    return all(
        math.isnan(metrics[f"heldout_acc_{op}"])
        or metrics[f"heldout_acc_{op}"] >= TARGET_HELDOUT_ACC
        for op in OPERATIONS
    )


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` with torch.save to a temporary file, then os.replace it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def train_modular(
    out: str | Path,
    p: int = DEFAULT_P,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    lr: float = 1e-3,
    weight_decay: float = 1.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    save_every: int | None = None,
    threads: int | None = None,
    log: Callable[[str], Any] | None = print,
    eval_every: int = 100,
) -> dict[str, Any]:
    """Train the two-operation model and write its checkpoint to ``out``.

    Returns the final metrics plus ``step`` (optimizer steps taken), ``path``,
    ``seconds``, ``fit_step`` (first evaluated step with 100% training accuracy
    on both operations, or None) and ``generalized_step`` (first with held-out
    accuracy >= 0.99 as well, or None). ``threads`` sets torch's intra-op
    thread count for the run (restored afterwards).
    """
    out = Path(out).expanduser()
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if save_every is not None and save_every < 1:
        raise ValueError(f"save_every must be >= 1 or None, got {save_every}")
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    if out.suffix != ".pt":
        raise ValueError(f"out must be a .pt file, got {out}")
    say = log if log is not None else (lambda _msg: None)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _train(
            out,
            p,
            train_fraction,
            seed,
            steps,
            lr,
            weight_decay,
            batch_size,
            save_every,
            say,
            eval_every,
        )
    finally:
        torch.set_num_threads(old_threads)


def _train(
    out: Path,
    p: int,
    train_fraction: float,
    seed: int,
    steps: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    save_every: int | None,
    say: Callable[[str], Any],
    eval_every: int,
) -> dict[str, Any]:
    """The training loop behind ``train_modular`` (arguments already validated)."""
    started = time.perf_counter()
    pairs = enumerate_pairs(p)
    in_train = split_pairs(pairs, train_fraction, seed)
    train_pairs = pairs.subset(in_train)
    tokens, targets = train_pairs.tokens, train_pairs.targets
    n_train = len(train_pairs)

    torch.manual_seed(seed)
    model = ModularTransformer(vocab_size(p))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=BETAS)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / WARMUP_STEPS)
    )
    batches = torch.Generator().manual_seed(seed + 1)
    history: dict[str, list[float]] = {}
    training = {
        "optimizer": "AdamW",
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "betas": list(BETAS),
        "warmup_steps": WARMUP_STEPS,
        "batch_size": int(batch_size),
        "max_steps": int(steps),
        "seed": int(seed),
        "eval_every": int(eval_every),
        "threads": torch.get_num_threads(),
        "torch_version": str(torch.__version__),
    }
    say(
        f"train-modular: p={p}, {n_train} training pairs of {len(pairs)} "
        f"(fraction {train_fraction}), batch {batch_size}, lr {lr}, wd {weight_decay}, "
        f"up to {steps} steps, seed {seed}"
    )

    def payload(step: int, metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": dict(model.hparams),
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "p": int(p),
            "split": {
                "seed": int(seed),
                "train_fraction": float(train_fraction),
                "train_mask": in_train.clone(),
            },
            "training": dict(training),
            "step": int(step),
            "metrics": dict(metrics),
            "history": {k: list(v) for k, v in history.items()},
        }

    def record(step: int) -> dict[str, float]:
        metrics = accuracy_metrics(model, pairs, in_train)
        history.setdefault("step", []).append(float(step))
        for key, value in metrics.items():
            if "_count_" not in key:
                history.setdefault(key, []).append(value)
        return metrics

    def snapshot(step: int, metrics: dict[str, float]) -> None:
        path = out.with_name(f"{out.stem}_step{step:06d}.pt")
        save_checkpoint(path, payload(step, metrics))
        say(f"  saved {path}")

    metrics = record(0)
    if save_every is not None:
        snapshot(0, metrics)
    fit_step: int | None = None
    generalized_step: int | None = None
    perm = torch.randperm(n_train, generator=batches)
    cursor = 0
    step = 0
    while step < steps:
        if cursor >= n_train:
            perm, cursor = torch.randperm(n_train, generator=batches), 0
        idx = perm[cursor : cursor + batch_size]
        cursor += batch_size
        loss = F.cross_entropy(model(tokens[idx]), targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1

        evaluated = step % eval_every == 0 or step == steps
        saving = save_every is not None and step % save_every == 0
        if not (evaluated or saving):
            continue
        metrics = record(step)
        if evaluated:
            say(
                f"step {step:6d}  train acc add {metrics['train_acc_addition']:.4f} "
                f"div {metrics['train_acc_division']:.4f}  held-out acc add "
                f"{metrics['heldout_acc_addition']:.4f} div {metrics['heldout_acc_division']:.4f}  "
                f"train loss {loss.item():.3e}  ({time.perf_counter() - started:.0f}s)"
            )
        if fit_step is None and _train_fitted(metrics):
            fit_step = step
            say(f"  100% training accuracy on both operations at step {step}")
        if saving and step < steps:
            snapshot(step, metrics)
        if _train_fitted(metrics) and _generalized(metrics):
            generalized_step = step
            say(f"  held-out accuracy >= {TARGET_HELDOUT_ACC} on both operations: stopping")
            break

    if fit_step is None:
        say(f"  warning: training accuracy below 100% after {step} steps")
    seconds = time.perf_counter() - started
    training["steps"] = step
    training["seconds"] = round(seconds, 1)
    training["fit_step"] = fit_step
    training["generalized_step"] = generalized_step
    save_checkpoint(out, payload(step, metrics))
    say(f"saved {out} after {step} steps ({seconds:.0f}s)")
    return {
        **metrics,
        "step": step,
        "path": str(out),
        "seconds": seconds,
        "fit_step": fit_step,
        "generalized_step": generalized_step,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``losskernel train-modular --out PATH [...]``."""
    parser = argparse.ArgumentParser(
        prog="losskernel train-modular",
        description="Train the modular addition + division transformer (paper Section 3).",
    )
    parser.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    parser.add_argument("--p", type=int, default=DEFAULT_P, help="prime modulus (default 97)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="maximum optimizer steps")
    parser.add_argument(
        "--train-fraction",
        type=float,
        default=DEFAULT_TRAIN_FRACTION,
        help="fraction of each operation's pairs used for training",
    )
    parser.add_argument("--seed", type=int, default=0, help="split, init and batch-order seed")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=1.0, help="AdamW weight decay")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--save-every",
        type=int,
        default=None,
        help="also keep <stem>_stepNNNNNN.pt every this many steps (and at step 0)",
    )
    parser.add_argument("--eval-every", type=int, default=100, help="steps between accuracy checks")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    try:
        result = train_modular(
            args.out,
            p=args.p,
            train_fraction=args.train_fraction,
            seed=args.seed,
            steps=args.steps,
            lr=args.lr,
            weight_decay=args.weight_decay,
            batch_size=args.batch_size,
            save_every=args.save_every,
            threads=args.threads,
            eval_every=args.eval_every,
        )
    except ValueError as exc:
        parser.exit(2, f"losskernel train-modular: error: {exc}\n")
    if result["fit_step"] is None:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
