"""The image-classifier task (``losskernel_dist.tasks.vision:image_classifier``) on generated JPEGs.

Runs only where torchvision imports (the separate .venv-vision, like
tests/tasks/test_imagenet.py). Classes are colours with their own texture, so
that even a random network's losses depend on the class; images are tiny and
resized to 32 px, so the whole path (load, sample, reduce, analyze, report)
takes seconds on a CPU. Weights are seeded random, a state-dict file, or a
model saved whole with ``torch.save``; the library's pretrained weights need the
internet and are not tried here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ..vision_helpers import requires_torchvision

pytestmark = requires_torchvision("tests/tasks/test_vision.py")

import losskernel_dist as lk  # noqa: E402
from losskernel_dist.cli import main  # noqa: E402
from losskernel_dist.errors import MissingFileError, TaskError  # noqa: E402
from losskernel_dist.store import RunStore  # noqa: E402
from losskernel_dist.task import TEXT_ATTRIBUTE, load_task  # noqa: E402
from losskernel_dist.tasks import vision  # noqa: E402

TARGET = "losskernel_dist.tasks.vision:image_classifier"
CLASSES = {"cherry": (200, 30, 40), "grass": (40, 170, 60), "sky": (70, 120, 220)}
TRAIN_PER_CLASS, EVAL_PER_CLASS = 4, 5


def make_image_folders(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """train/<class>/*.jpg and eval/<class>/*.jpg of varying sizes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", TRAIN_PER_CLASS), ("eval", EVAL_PER_CLASS)):
        for k, (name, colour) in enumerate(CLASSES.items()):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = rng.integers(24, 48, size=2)
                stripes = (np.arange(w) // (2 + k) % 2)[None, :, None] * 60
                pixels = np.clip(np.asarray(colour) + stripes + rng.normal(0, 25, (h, w, 3)),
                                 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i}.jpg", quality=90)
    return root / "train", root / "eval"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_image_folders(tmp_path_factory.mktemp("images"))


def args(folders, **extra) -> dict:
    train, evalu = folders
    return {"model": "torchvision:resnet18", "train_root": str(train), "eval_root": str(evalu),
            "image_size": 32, "n_eval": None, "thumbnail_size": 8, "bn_images": 6, **extra}


def config(folders, output: Path, **extra) -> dict:
    return {"task": {"target": TARGET, "args": args(folders, **extra)},
            "sampler": {"chains": 2, "draws": 6, "burnin_steps": 3, "batch_size": 4,
                        "lr": 1e-6, "nbeta": 10.0, "localization": 1e4, "device": "cpu",
                        "threads": 1, "seed": 0},
            "eval": {"batch_size": 8},
            "analysis": {"enabled": True, "umap": False, "neighbours": 4},
            "output": str(output)}


def test_folders_give_the_labels_names_and_attributes(folders):
    task = load_task(TARGET, args(folders))
    assert task.label_names == sorted(CLASSES)
    assert task.n_eval == 3 * EVAL_PER_CLASS and task.n_train == 3 * TRAIN_PER_CLASS
    assert np.array_equal(np.bincount(task.labels), [EVAL_PER_CLASS] * 3)
    image, label = task.eval[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert int(label) == task.labels[0]
    assert task.attributes["image"].shape == (task.n_eval, 8, 8, 3)
    assert task.describe(0) == "cherry/cherry_0.jpg (cherry)"
    assert task.model.fc.out_features == 3 and not task.model.training
    raw = load_task(TARGET, args(folders, normalisation="none"))
    custom = load_task(TARGET, args(folders, normalisation={"mean": [0.5] * 3,
                                                            "std": [0.25] * 3}))
    assert torch.allclose((raw.eval[0][0] - 0.5) / 0.25, custom.eval[0][0], atol=1e-6)
    assert 0.0 <= float(raw.eval[0][0].min()) and float(raw.eval[0][0].max()) <= 1.0
    subset = load_task(TARGET, args(folders, n_eval=6, seed=2))
    assert subset.n_eval == 6 and np.all(np.diff(subset.attributes["eval_index"]) > 0)
    # the same seed gives the same random weights, another seed others
    again = load_task(TARGET, args(folders))
    other = load_task(TARGET, args(folders, seed=1))
    assert torch.equal(task.model.fc.weight, again.model.fc.weight)
    assert not torch.equal(task.model.fc.weight, other.model.fc.weight)


def test_weights_file_and_saved_model(folders, tmp_path):
    task = load_task(TARGET, args(folders, seed=5))
    with torch.no_grad():
        want = task.loss(task.model, next(iter(torch.utils.data.DataLoader(task.eval, 5))))
    state = tmp_path / "weights.pt"
    torch.save({"state_dict": task.model.state_dict()}, state)
    from_state = load_task(TARGET, args(folders, weights=str(state), bn_images=0))
    whole = tmp_path / "model.pt"
    torch.save(task.model, whole)
    from_file = load_task(TARGET, args(folders, model=str(whole), weights="none", bn_images=0))
    for other in (from_state, from_file):
        with torch.no_grad():
            got = other.loss(other.model, next(iter(torch.utils.data.DataLoader(other.eval, 5))))
        assert torch.equal(got, want)


def test_timm_model(folders):
    pytest.importorskip("timm")
    task = load_task(TARGET, args(folders, model="timm:resnet10t"))
    images, labels = next(iter(torch.utils.data.DataLoader(task.eval, 4)))
    with torch.no_grad():
        out = task.loss(task.model, [images, labels])
        logits = task.model(images).double()
    assert out.shape == (4,) and torch.isfinite(out).all()
    # the cross-entropy of the timm model's logits, from its definition
    by_hand = logits.logsumexp(-1) - logits.gather(1, labels[:, None])[:, 0]
    assert torch.allclose(out.double(), by_hand, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_whole_pipeline_on_generated_jpegs(folders, tmp_path):
    run = lk.run(lk.load_config(config(folders, tmp_path / "run")), progress=False)
    store = RunStore.open(run.path / "store.zarr")
    assert store.done().all() and store.label_names() == sorted(CLASSES)
    assert store.attributes()[TEXT_ATTRIBUTE][0] == "cherry/cherry_0.jpg (cherry)"
    rho = run.kernel("corr").values
    assert rho.shape == (15, 15) and np.allclose(np.diag(rho), 1.0, atol=1e-5)
    assert "Nearest neighbours" in run.report_path.read_text()
    assert run.metrics["neighbours"]["mean_top1_corr"] is not None


def test_bad_input_is_one_clear_line(folders, tmp_path, capsys):
    def error(**extra) -> str:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(config(folders, tmp_path / "out", **extra)))
        capsys.readouterr()
        assert main(["run", str(path), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("losskernel: error:"), err
        return err[0]

    assert "eval_root not found" in error(eval_root=str(tmp_path / "nowhere"))
    assert "no file" in error(model="resnet18")
    assert "cannot build torchvision:no_such_net" in error(model="torchvision:no_such_net")
    assert "normalisation must be" in error(normalisation="zscore")
    wrong = tmp_path / "ten.pt"
    torch.save(load_task(TARGET, args(folders)).model.state_dict() | {
        "fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}, wrong)
    assert "does not fit torchvision:resnet18 with 3 classes" in error(weights=str(wrong))
    extra_class = tmp_path / "eval_extra"
    (extra_class / "moon").mkdir(parents=True)
    assert "classes that train_root has not: ['moon']" in error(eval_root=str(extra_class))
    with pytest.raises(MissingFileError):
        vision.build_classifier("torchvision:resnet18", str(tmp_path / "no.pt"), 3, 0)
    with pytest.raises(TaskError, match="saved model carries its own weights"):
        whole = tmp_path / "m.pt"
        torch.save(torch.nn.Linear(2, 2), whole)
        vision.build_classifier(str(whole), "default", 3, 0)


def test_the_docs_config_is_valid_and_builds_with_local_folders(folders):
    import inspect

    text = (Path(__file__).resolve().parents[2] / "docs" / "byom_text.md").read_text()
    block = text.split("## Image classifiers", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    config = lk.load_config({**yaml.safe_load(block), "output": "runs/unused"})
    assert config.task.target == TARGET
    inspect.signature(vision.image_classifier).bind(**config.task.args)
    train, evalu = folders
    task = load_task(TARGET, {**config.task.args, "weights": "none", "train_root": str(train),
                              "eval_root": str(evalu), "image_size": 32, "n_eval": 6})
    assert task.n_eval == 6 and task.label_names == sorted(CLASSES)
