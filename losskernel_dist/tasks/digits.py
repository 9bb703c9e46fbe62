"""Memorization on real data (paper Appendix D.3): handwritten digits with flipped labels.

The paper mislabels 1,000 ImageNet training images, trains Inception-v1 until it
fits them, and finds that the per-sample loss variance K_ii flags the
mislabelled images (ROC-AUC 95.8): memorizing a label that shared features do
not support takes a precise weight setting, a sharper basin. This task is the
same experiment at CPU size, on real data that ships offline: scikit-learn's
bundled ``load_digits`` (1,797 handwritten 8x8 digits, 10 classes, UCI).

* Split: a seeded, class-stratified ``train_fraction`` of the digits is the
  training set; the rest is held out (used only to report test accuracy).
* Flip: ``round(flip_fraction * n_train)`` training samples, chosen at random
  (seeded), get a label drawn uniformly from the nine *other* classes.
* Model: a ReLU MLP 64 -> hidden -> hidden -> 10 on pixel values / 16, trained
  full-batch with Adam until it fits the noisy training set (100% accuracy on
  the flipped labels too, i.e. it memorized them) and its mean loss is below
  ``target_loss``.
* Kernel: over the training samples (eval = the training set, or a seeded
  subset of ``n_eval`` of them), labels = the noisy training labels the model
  was trained on; attributes ``mislabelled`` (0/1, the flag the analysis tests
  K_ii against), ``true_label``, ``digit_index`` (row in ``load_digits``) and
  ``image`` (the 8x8 digit as RGB uint8, for the thumbnail grid).

The trained weights ship as ``tasks/data/digits_mlp.pt`` (about 100 kB): the
checkpoint stores the split, the flipped samples and their noisy labels, so
``build`` rebuilds exactly the training set the weights were fitted to, on any
machine. ``train_digits`` (``python -m losskernel_dist.tasks.digits --out PATH``)
retrains it deterministically on CPU in a few seconds; it is shipped rather than
retrained in ``build`` because floating-point training is only bitwise
reproducible on one platform and library version, and the run fingerprints the
model.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from losskernel_dist.errors import MissingFileError, TaskError
from losskernel_dist.task import Task

N_CLASSES = 10
N_PIXELS = 64
PIXEL_MAX = 16.0
CHECKPOINT_FORMAT = "losskernel_dist.digits"
CHECKPOINT_VERSION = 1
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "data" / "digits_mlp.pt"


# --------------------------------------------------------------------------- data


def load_digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits: pixels as float32 [M, 64] scaled to [0, 1], labels int64 [M]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.asarray(digits.data, dtype=np.float32) / PIXEL_MAX
    y = np.asarray(digits.target, dtype=np.int64)
    return x, y


def split_train(labels: np.ndarray, train_fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the training samples: round(fraction * count) of each class.

    Stratified by class so that every class keeps the same share; deterministic
    given ``seed``.
    """
    if not 0.0 < float(train_fraction) <= 1.0:
        raise TaskError(f"train_fraction must be in (0, 1], got {train_fraction!r}")
    rng = np.random.default_rng([int(seed), 0])
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        chosen.append(rng.permutation(idx)[: round(float(train_fraction) * len(idx))])
    return np.sort(np.concatenate(chosen))


def flip_labels(
    labels: np.ndarray, flip_fraction: float, seed: int, n_classes: int = N_CLASSES
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy labels and the 0/1 flipped mask: a seeded ``flip_fraction`` of samples relabelled.

    Exactly ``round(flip_fraction * len(labels))`` samples are chosen without
    replacement; each gets a label drawn uniformly from the other classes, so
    a flipped label never equals the true one.
    """
    if not 0.0 <= float(flip_fraction) < 1.0:
        raise TaskError(f"flip_fraction must be in [0, 1), got {flip_fraction!r}")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng([int(seed), 1])
    n_flip = round(float(flip_fraction) * len(labels))
    which = rng.choice(len(labels), size=n_flip, replace=False)
    shift = rng.integers(1, n_classes, size=n_flip)  # 1..n_classes-1: never the true class
    noisy = labels.copy()
    noisy[which] = (labels[which] + shift) % n_classes
    flipped = np.zeros(len(labels), dtype=np.int64)
    flipped[which] = 1
    return noisy, flipped


# -------------------------------------------------------------------------- model


class DigitsMLP(nn.Module):
    """ReLU MLP on the 64 pixels: 64 -> hidden -> hidden -> 10 logits."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.hparams = {"hidden": int(hidden)}
        self.fc1 = nn.Linear(N_PIXELS, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, N_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, 10] for pixels [B, 64] in [0, 1]."""
        return self.out(F.relu(self.fc2(F.relu(self.fc1(x)))))


def digits_loss(model: nn.Module, batch: Any) -> Tensor:
    """Per-sample cross-entropy against the (noisy) training label, Tensor[B]."""
    pixels, targets = batch[0], batch[1]
    return F.cross_entropy(model(pixels), targets, reduction="none")


# ----------------------------------------------------------------------- training


def train_digits(
    hidden: int = 128,
    train_fraction: float = 0.8,
    flip_fraction: float = 0.1,
    data_seed: int = 0,
    model_seed: int = 0,
    lr: float = 3e-3,
    max_steps: int = 5000,
    target_loss: float = 0.01,
    log_every: int = 0,
) -> dict[str, Any]:
    """Train the MLP full-batch with Adam until it fits the noisy labels; return a checkpoint.

    Stops at the first step where every training sample (flipped ones included)
    is classified as its noisy label and the mean training loss is below
    ``target_loss``; raises if ``max_steps`` pass first. Runs on CPU in one
    thread, so a given machine and library version reproduces it bit for bit.
    """
    x, y = load_digit_arrays()
    train_idx = split_train(y, train_fraction, data_seed)
    noisy, flipped = flip_labels(y[train_idx], flip_fraction, data_seed)
    xt, yt = torch.from_numpy(x[train_idx]), torch.from_numpy(noisy)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(model_seed))
            model = DigitsMLP(hidden)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        t0 = time.perf_counter()
        for step in range(1, max_steps + 1):
            logits = model(xt)
            loss = F.cross_entropy(logits, yt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                logits = model(xt)
                acc = float((logits.argmax(1) == yt).float().mean())
                now = float(F.cross_entropy(logits, yt))
            if log_every and step % log_every == 0:
                print(f"step {step}: loss {now:.4g}, train accuracy {acc:.4f}")
            if acc == 1.0 and now < target_loss:
                break
        else:
            raise RuntimeError(
                f"the MLP did not fit the noisy labels in {max_steps} steps "
                f"(loss {now:.4g}, accuracy {acc:.4f}); raise max_steps or hidden"
            )
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    model.eval()
    held_out = np.setdiff1d(np.arange(len(y)), train_idx)
    with torch.no_grad():
        test_acc = float((model(torch.from_numpy(x[held_out])).argmax(1).numpy()
                          == y[held_out]).mean()) if len(held_out) else float("nan")
        per_sample = digits_loss(model, (xt, yt)).numpy()
    flag = flipped.astype(bool)
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": dict(model.hparams),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "split": {
            "train_fraction": float(train_fraction),
            "flip_fraction": float(flip_fraction),
            "data_seed": int(data_seed),
            "train_index": torch.from_numpy(train_idx),
            "noisy_label": torch.from_numpy(noisy),
            "flipped": torch.from_numpy(flipped),
        },
        "training": {
            "model_seed": int(model_seed),
            "lr": float(lr),
            "steps": int(step),
            "target_loss": float(target_loss),
            "seconds": round(seconds, 2),
            "train_loss": now,
            "train_accuracy": acc,
            "train_loss_flipped": float(per_sample[flag].mean()) if flag.any() else None,
            "train_loss_clean": float(per_sample[~flag].mean()),
            "test_accuracy": test_acc,
            "torch": str(torch.__version__),
        },
    }


# --------------------------------------------------------------------- checkpoint


_NOT_A_CHECKPOINT = ("task.args.checkpoint must be a file written by 'python -m "
                     "losskernel_dist.tasks.digits --out PATH' (or leave it out for the shipped one)")


def load_checkpoint(checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Read a checkpoint written by ``train_digits`` (default: the shipped one).

    Loaded with ``weights_only=True``: plain tensors, numbers and strings only.
    """
    path = DEFAULT_CHECKPOINT if checkpoint is None else Path(checkpoint).expanduser()
    if not path.is_file():
        raise MissingFileError(
            f"digits checkpoint not found: {path} (train one with "
            "'python -m losskernel_dist.tasks.digits --out PATH')"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise TaskError(f"cannot read digits checkpoint {path} ({type(exc).__name__}; "
                        f"--debug shows why): {_NOT_A_CHECKPOINT}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TaskError(f"{path} is not a digits-task checkpoint (format {CHECKPOINT_FORMAT!r}): "
                        f"{_NOT_A_CHECKPOINT}")
    return ckpt


# --------------------------------------------------------------------------- task


def build(
    checkpoint: str | None = None,
    n_eval: int | None = None,
    eval_seed: int = 0,
) -> Task:
    """The memorization Task from a trained checkpoint.

    checkpoint: path written by ``train_digits``; None uses the shipped
        ``tasks/data/digits_mlp.pt``.
    n_eval: number of kernel samples, a seeded random subset of the training
        set (kept in training-set order); None takes the whole training set.
    eval_seed: seed of that subset.

    Task.train is the noisy training set the weights were fitted to; the eval
    samples are training samples with their noisy labels.
    """
    ckpt = load_checkpoint(checkpoint)
    try:
        model = DigitsMLP(**ckpt["model"])
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, KeyError, ValueError, RuntimeError) as exc:  # its content, not the code
        raise TaskError(f"digits checkpoint {checkpoint or DEFAULT_CHECKPOINT} holds no digits "
                        f"model ({type(exc).__name__}): {_NOT_A_CHECKPOINT}") from exc
    model.eval()
    x, y = load_digit_arrays()
    split = ckpt["split"]
    train_idx = split["train_index"].numpy()
    noisy = split["noisy_label"].numpy()
    flipped = split["flipped"].numpy()
    if np.any((flipped == 1) == (noisy == y[train_idx])):
        raise TaskError("checkpoint's flipped mask does not match its noisy labels; "
                         "is this load_digits the one it was trained on?")
    n_train = len(train_idx)
    if n_eval is None:
        chosen = np.arange(n_train)
    else:
        if isinstance(n_eval, bool) or not isinstance(n_eval, (int, np.integer)) or not (
            2 <= n_eval <= n_train
        ):
            raise TaskError(f"task.args.n_eval must be an integer in 2..{n_train} (or left out "
                            f"for the whole training set), got {n_eval!r}")
        rng = np.random.default_rng([int(eval_seed), 2])
        chosen = np.sort(rng.choice(n_train, size=int(n_eval), replace=False))
    pixels = torch.from_numpy(x[train_idx])
    targets = torch.from_numpy(noisy)
    grey = np.rint(x[train_idx[chosen]].reshape(-1, 8, 8) * 255).astype(np.uint8)
    return Task(
        model=model,
        train=TensorDataset(pixels, targets),
        eval=TensorDataset(pixels[chosen], targets[chosen]),
        loss=digits_loss,
        labels=noisy[chosen],
        attributes={
            "mislabelled": flipped[chosen],
            "true_label": y[train_idx[chosen]],
            "digit_index": train_idx[chosen],
            # RGB (grey repeated): the analysis' colour groups need three channels.
            "image": np.repeat(grey[..., None], 3, axis=-1),
        },
        label_names=[str(c) for c in range(N_CLASSES)],
        describe=describe_digits(train_idx[chosen], y[train_idx[chosen]], noisy[chosen]),
    )


def describe_digits(index: np.ndarray, true_label: np.ndarray,
                    label: np.ndarray) -> Callable[[int], str]:
    """``describe(j)``: which digit sample j is, what it shows and what it was trained as
    (``"digit #12: a 3, trained as 5 (flipped)"``); the explorer shows it beside the image."""

    def describe(j: int) -> str:
        text = f"digit #{int(index[j])}: a {int(true_label[j])}, trained as {int(label[j])}"
        return text + (" (flipped)" if label[j] != true_label[j] else "")

    return describe


def main(argv: list[str] | None = None) -> int:
    """``python -m losskernel_dist.tasks.digits --out PATH``: train and save a checkpoint."""
    p = argparse.ArgumentParser(description=train_digits.__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="checkpoint path to write")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--train-fraction", type=float, default=0.8)
    p.add_argument("--flip-fraction", type=float, default=0.1)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--model-seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--max-steps", type=int, default=5000)
    p.add_argument("--target-loss", type=float, default=0.01)
    args = p.parse_args(argv)
    ckpt = train_digits(
        hidden=args.hidden, train_fraction=args.train_fraction,
        flip_fraction=args.flip_fraction, data_seed=args.data_seed,
        model_seed=args.model_seed, lr=args.lr, max_steps=args.max_steps,
        target_loss=args.target_loss, log_every=500,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, args.out)
    print({k: v for k, v in ckpt["training"].items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
