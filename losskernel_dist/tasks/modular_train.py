"""Train the Section 3 model: one transformer on modular addition and division at once.

AdamW (lr 1e-3, weight decay 1.0, betas (0.9, 0.98), 10 warm-up steps, as in
Power et al. 2022) on minibatches of the training pairs of both operations.
Training runs until the model fits its training set (100% accuracy on both
operations, the paper's stopping rule) and on, as the step budget allows, until
it also generalizes (held-out accuracy >= 0.99 on both operations); it then
trains ``extra_steps`` more, the learning rate decaying linearly to a tenth, so
that the chain start w* is settled rather than just over the line, and stops at the first check where both still hold (or at
``steps``).

The final checkpoint is written atomically (temporary file + os.replace) so a
killed run never leaves a truncated file where ``build`` looks. With
``save_every`` / ``save_at``, intermediate checkpoints ``<stem>_step<NNNNNN>.pt``
are kept for studying the kernel's development over training. Every checkpoint
is loadable by ``losskernel_dist.tasks.modular.build``.

Deterministic given ``seed`` on a given machine and thread count (the seed
fixes the split, the initialization and the minibatch order; evaluations and
saves draw no random numbers, so they do not change the trajectory).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
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
DEFAULT_EVAL_EVERY = 200
DEFAULT_EXTRA_STEPS = 2000
BETAS = (0.9, 0.98)
WARMUP_STEPS = 10
TARGET_HELDOUT_ACC = 0.99
SETTLE_FINAL_LR_FACTOR = 0.1


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


def lr_factor(step: int, generalized_step: int | None, extra_steps: int) -> float:
    """Learning-rate multiplier for the optimizer step taken after ``step`` steps.

    Linear warm-up over the first WARMUP_STEPS steps; once the model has
    generalized, a linear decay to SETTLE_FINAL_LR_FACTOR over ``extra_steps``
    (AdamW with weight decay 1.0 keeps oscillating at full lr, so annealing
    lets the final weights settle instead of stopping mid-oscillation).
    """
    factor = min(1.0, (step + 1) / WARMUP_STEPS)
    if generalized_step is not None:
        progress = 1.0 if extra_steps == 0 else min(1.0, (step - generalized_step) / extra_steps)
        factor *= 1.0 - (1.0 - SETTLE_FINAL_LR_FACTOR) * progress
    return factor


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
    eval_every: int = DEFAULT_EVAL_EVERY,
    extra_steps: int = DEFAULT_EXTRA_STEPS,
    save_at: Iterable[int] | None = None,
) -> dict[str, Any]:
    """Train the two-operation model and write its checkpoint to ``out``.

    Stopping rule, checked every ``eval_every`` steps: once training accuracy is
    100% and held-out accuracy >= 0.99 on both operations (the "generalized"
    step), train ``extra_steps`` more with the learning rate decaying linearly
    to a tenth, so that w* settles into its basin (the sampler starts chains
    there and localizes around it), then stop at the first check where both
    criteria still hold. ``steps`` caps it all.

    Intermediate checkpoints ``<stem>_step<NNNNNN>.pt`` are written at every
    multiple of ``save_every`` (step 0 included) and at each step in
    ``save_at``. ``threads`` sets torch's intra-op thread count for the run
    (restored afterwards).

    Returns the final metrics (``train_acc_addition``, ``heldout_acc_division``,
    ... as in the checkpoint) plus ``step`` (optimizer steps taken), ``path``,
    ``seconds``, ``fit_step`` (first check with 100% training accuracy on both
    operations, or None) and ``generalized_step`` (or None).
    """
    out = Path(out).expanduser()
    for name, value, low in (
        ("steps", steps, 1),
        ("batch_size", batch_size, 1),
        ("eval_every", eval_every, 1),
        ("extra_steps", extra_steps, 0),
    ):
        if int(value) < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if save_every is not None and save_every < 1:
        raise ValueError(f"save_every must be >= 1 or None, got {save_every}")
    save_steps = {int(s) for s in (save_at or ())}
    if any(s < 0 for s in save_steps):
        raise ValueError(f"save_at steps must be >= 0, got {sorted(save_steps)}")
    if out.suffix != ".pt":
        raise ValueError(f"out must be a .pt file, got {out}")
    say = log if log is not None else (lambda _msg: None)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _train(
            out,
            {
                "p": int(p),
                "train_fraction": float(train_fraction),
                "seed": int(seed),
                "steps": int(steps),
                "lr": float(lr),
                "weight_decay": float(weight_decay),
                "batch_size": int(batch_size),
                "eval_every": int(eval_every),
                "extra_steps": int(extra_steps),
            },
            save_every,
            save_steps,
            say,
        )
    finally:
        torch.set_num_threads(old_threads)


def _train(
    out: Path,
    cfg: dict[str, Any],
    save_every: int | None,
    save_steps: set[int],
    say: Callable[[str], Any],
) -> dict[str, Any]:
    """The training loop behind ``train_modular`` (arguments already validated)."""
    started = time.perf_counter()
    p, seed, steps, eval_every = cfg["p"], cfg["seed"], cfg["steps"], cfg["eval_every"]
    pairs = enumerate_pairs(p)
    in_train = split_pairs(pairs, cfg["train_fraction"], seed)
    train_pairs = pairs.subset(in_train)
    tokens, targets = train_pairs.tokens, train_pairs.targets
    n_train = len(train_pairs)

    torch.manual_seed(seed)
    model = ModularTransformer(vocab_size(p))
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=BETAS
    )
    batches = torch.Generator().manual_seed(seed + 1)
    history: dict[str, list[float]] = {}
    training: dict[str, Any] = {
        "optimizer": "AdamW",
        "betas": list(BETAS),
        "warmup_steps": WARMUP_STEPS,
        "settle_final_lr_factor": SETTLE_FINAL_LR_FACTOR,
        "max_steps": steps,
        **{k: v for k, v in cfg.items() if k not in ("p", "train_fraction", "steps")},
        "threads": torch.get_num_threads(),
        "torch_version": str(torch.__version__),
    }
    say(
        f"train-modular: p={p}, {n_train} training pairs of {len(pairs)} "
        f"(fraction {cfg['train_fraction']}), batch {cfg['batch_size']}, lr {cfg['lr']}, "
        f"wd {cfg['weight_decay']}, up to {steps} steps, seed {seed}"
    )

    def payload(step: int, metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": dict(model.hparams),
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "p": p,
            "split": {
                "seed": seed,
                "train_fraction": cfg["train_fraction"],
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

    def wants_snapshot(step: int) -> bool:
        return step in save_steps or (save_every is not None and step % save_every == 0)

    def snapshot(step: int, metrics: dict[str, float]) -> None:
        path = out.with_name(f"{out.stem}_step{step:06d}.pt")
        save_checkpoint(path, payload(step, metrics))
        say(f"  saved {path}")

    metrics = record(0)
    if wants_snapshot(0):
        snapshot(0, metrics)
    fit_step: int | None = None
    generalized_step: int | None = None
    perm = torch.randperm(n_train, generator=batches)
    cursor = 0
    step = 0
    while step < steps:
        if cursor >= n_train:
            perm, cursor = torch.randperm(n_train, generator=batches), 0
        idx = perm[cursor : cursor + cfg["batch_size"]]
        cursor += cfg["batch_size"]
        factor = lr_factor(step, generalized_step, cfg["extra_steps"])
        for group in optimizer.param_groups:
            group["lr"] = cfg["lr"] * factor
        loss = F.cross_entropy(model(tokens[idx]), targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1

        evaluated = step % eval_every == 0 or step == steps
        saving = wants_snapshot(step)
        if not (evaluated or saving):
            continue
        metrics = record(step)
        if saving:
            snapshot(step, metrics)
        if not evaluated:
            continue
        say(
            f"step {step:6d}  train acc add {metrics['train_acc_addition']:.4f} "
            f"div {metrics['train_acc_division']:.4f}  held-out acc add "
            f"{metrics['heldout_acc_addition']:.4f} div {metrics['heldout_acc_division']:.4f}  "
            f"train loss add {metrics['train_loss_addition']:.2e} "
            f"div {metrics['train_loss_division']:.2e}  ({time.perf_counter() - started:.0f}s)"
        )
        done = _train_fitted(metrics) and _generalized(metrics)
        if fit_step is None and _train_fitted(metrics):
            fit_step = step
            say(f"  100% training accuracy on both operations at step {step}")
        if generalized_step is None and done:
            generalized_step = step
            say(
                f"  held-out accuracy >= {TARGET_HELDOUT_ACC} on both operations at step "
                f"{step}; settling for {cfg['extra_steps']} more steps"
            )
        if done and step >= generalized_step + cfg["extra_steps"]:
            say("  criteria hold after settling: stopping")
            break

    if not _train_fitted(metrics):
        say(f"  warning: training accuracy below 100% after {step} steps")
    seconds = time.perf_counter() - started
    training.update(
        steps=step, seconds=round(seconds, 1), fit_step=fit_step, generalized_step=generalized_step
    )
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
    """Command line: ``losskernel train-modular --out PATH [...]``; exit 1 if not fitted."""
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
    parser.add_argument(
        "--save-at",
        type=int,
        nargs="+",
        default=None,
        metavar="STEP",
        help="also keep <stem>_stepNNNNNN.pt at these steps",
    )
    parser.add_argument(
        "--eval-every", type=int, default=DEFAULT_EVAL_EVERY, help="steps between accuracy checks"
    )
    parser.add_argument(
        "--extra-steps",
        type=int,
        default=DEFAULT_EXTRA_STEPS,
        help="steps to keep training after the model first generalizes",
    )
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
            extra_steps=args.extra_steps,
            save_at=args.save_at,
        )
    except ValueError as exc:
        parser.exit(2, f"losskernel train-modular: error: {exc}\n")
    fitted = result["train_acc_addition"] == 1.0 and result["train_acc_division"] == 1.0
    return 0 if fitted else 1


if __name__ == "__main__":
    raise SystemExit(main())
