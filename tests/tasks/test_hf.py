"""The Hugging Face causal-LM task (``losskernel_dist.tasks.hf:causal_lm``), offline.

Tiny GPT-2 and Llama models and a byte-level BPE tokenizer trained here with
``tokenizers`` are saved with ``save_pretrained`` into temporary folders
(tests/hf_helpers.py); the data are generated jsonl, txt, csv and parquet files.
Checked: data loading and attributes, the losses against a hand computation,
the whole pipeline at both granularities, the sequence/token consistency (with
``loss: sum`` and one seed the sequence kernel is the block sums of the token
kernel), eval mode (dropout in the config changes no draw), ``sample_params``
(the other weights stay bitwise at w*), and one clear line for bad input.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers/datasets are imported

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

import losskernel_dist as lk  # noqa: E402
from losskernel_dist.checkpoint import read_checkpoint  # noqa: E402
from losskernel_dist.cli import main  # noqa: E402
from losskernel_dist.errors import MissingFileError, TaskError  # noqa: E402
from losskernel_dist.store import RunStore  # noqa: E402
from losskernel_dist.task import MARK_CLOSE, MARK_OPEN, TEXT_ATTRIBUTE, load_task  # noqa: E402
from losskernel_dist.tasks import hf  # noqa: E402

from .. import hf_helpers as H  # noqa: E402

TARGET = "losskernel_dist.tasks.hf:causal_lm"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Model folders and data files, made once; the datasets cache in a temp folder."""
    import datasets

    root = tmp_path_factory.mktemp("hf")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", root / "cache")
        texts = [r["text"] for r in H.corpus(200)]
        out = {
            "root": root,
            "gpt2": H.make_lm(root / "gpt2", "gpt2", texts, train_steps=30),
            "llama": H.make_lm(root / "llama", "llama", texts, train_steps=30),
            "train": H.write_jsonl(root / "train.jsonl", H.corpus(48, seed=1)),
            "eval": H.write_jsonl(root / "eval.jsonl", H.corpus(10, seed=2)),
        }
        yield out


def args(files, **extra) -> dict:
    return {"model": str(files["gpt2"]), "train": {"data_files": str(files["train"])},
            "eval": {"data_files": str(files["eval"])}, "max_length": 24, **extra}


def run_config(files, output: Path, analysis: bool = False, **task_args) -> dict:
    return {
        "task": {"target": TARGET, "args": args(files, **task_args)},
        "sampler": {"chains": 2, "draws": 8, "burnin_steps": 4, "batch_size": 8, "lr": 1e-4,
                    "nbeta": 10.0, "localization": 1000.0, "seed": 3, "device": "cpu",
                    "threads": 1, "checkpoint_every": 0},
        "eval": {"batch_size": 40},
        "reduce": {"dtype": "float64", "kernel": "both", "neighbours_k": 5,
                   "neighbours_bottom_k": 2},
        "analysis": {"enabled": analysis, "neighbours": 5, "umap_neighbours": 6},
        "output": str(output),
    }


# ------------------------------------------------------------------ data and losses


def test_every_file_format_loads_with_its_columns_and_a_seeded_subset(files, tmp_path):
    records = H.corpus(30, seed=5)
    jsonl = H.write_jsonl(tmp_path / "d.jsonl", records)
    txt = tmp_path / "d.txt"
    txt.write_text("".join(r["text"] + "\n" for r in records))
    import pandas as pd

    frame = pd.DataFrame(records)
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    texts = {}
    for path in (jsonl, txt, tmp_path / "d.csv", tmp_path / "d.parquet"):
        task = load_task(TARGET, args(files, eval={"data_files": str(path), "n": 12, "seed": 4}))
        assert task.n_eval == 12
        texts[path.suffix] = list(task.attributes[TEXT_ATTRIBUTE])
        rows = task.attributes["row"]
        assert np.all(np.diff(rows) > 0) and rows.max() < 30  # file order, a subset
        want = [records[r]["text"] for r in rows]
        assert [t.strip() for t in texts[path.suffix]] == [w[:len(t.strip())] for t, w in
                                                           zip(texts[path.suffix], want,
                                                               strict=True)]
        if path.suffix != ".txt":  # a text file has no other column
            assert np.array_equal(task.labels, [records[r]["label"] for r in rows])
            assert list(task.attributes["source"]) == [records[r]["source"] for r in rows]
        else:
            assert task.labels is None and "source" not in task.attributes
    assert len(set(map(tuple, texts.values()))) == 1  # same rows from every format
    other = load_task(TARGET, args(files, eval={"data_files": str(jsonl), "n": 12, "seed": 5}))
    assert list(other.attributes["row"]) != list(rows)


def test_sequence_loss_is_the_sum_of_token_cross_entropies(files):
    task = load_task(TARGET, args(files))
    model, tok = task.model, hf.load_tokenizer(None, str(files["gpt2"]), None, False)
    ids, mask = task.eval.tensors
    losses = task.loss(model, [ids, mask])
    for j in (0, 3):
        n = int(mask[j].sum())
        real = ids[j, :n].long()[None]
        with torch.no_grad():
            logits = model(input_ids=real).logits[0, :-1]
        by_hand = torch.nn.functional.cross_entropy(logits, real[0, 1:], reduction="sum")
        assert torch.allclose(losses[j], by_hand, rtol=1e-5)
        assert tok.decode(real[0]) == task.attributes[TEXT_ATTRIBUTE][j]
    # padding changes nothing: other ids in the padded places, and a wider pad
    noisy = ids.clone()
    noisy[~mask] = torch.randint(0, 50, (int((~mask).sum()),), dtype=noisy.dtype)
    wide = torch.cat([noisy, torch.zeros(len(ids), 5, dtype=ids.dtype)], dim=1)
    wide_mask = torch.cat([mask, torch.zeros(len(ids), 5, dtype=torch.bool)], dim=1)
    assert torch.allclose(task.loss(model, [wide, wide_mask]), losses, rtol=1e-5)
    mean = load_task(TARGET, args(files, loss="mean"))
    n_tokens = torch.as_tensor(task.attributes["n_tokens"], dtype=torch.float32)
    assert torch.allclose(mean.loss(model, [ids, mask]), losses / n_tokens, rtol=1e-5)


def test_token_granularity_has_one_sample_per_scored_token(files):
    seq = load_task(TARGET, args(files))
    task = load_task(TARGET, args(files, granularity="token"))
    a = task.attributes
    n_tokens = seq.attributes["n_tokens"]
    assert task.n_eval == n_tokens.sum() == len(a["position"])
    assert np.array_equal(np.bincount(a["sequence"]), n_tokens)
    ids, mask = seq.eval.tensors
    assert np.array_equal(a["token_id"], ids.numpy()[a["sequence"], a["position"]])
    assert a["position"].min() == 1 and np.all(mask.numpy()[a["sequence"], a["position"]])
    assert np.array_equal(task.labels, seq.labels[a["sequence"]])
    assert np.array_equal(a["source"], seq.attributes["source"][a["sequence"]])
    j = int(np.flatnonzero(a["position"] == 3)[0])
    text = a[TEXT_ATTRIBUTE][j]
    assert text.count(MARK_OPEN) == 1 and MARK_OPEN + a["token"][j] + MARK_CLOSE in text
    # per-token losses sum to the sequence losses
    token_losses = torch.cat([task.loss(task.model, batch) for batch in torch.utils.data
                              .DataLoader(task.eval, batch_size=37)])
    sums = torch.zeros(seq.n_eval).index_add_(0, torch.as_tensor(a["sequence"]),
                                              token_losses.detach())
    assert torch.allclose(sums, seq.loss(seq.model, [ids, mask]).detach(), rtol=1e-5)


def test_bfloat16_weights_give_float32_losses(files):
    task = load_task(TARGET, args(files, dtype="bfloat16"))
    assert next(task.model.parameters()).dtype == torch.bfloat16
    out = task.loss(task.model, task.eval.tensors)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # the same sequence losses as the float32 model, to bf16's precision (9e-4 measured)
    full = load_task(TARGET, args(files))
    with torch.no_grad():
        want = full.loss(full.model, full.eval.tensors)
    assert ((out.detach() - want).abs() / want.abs()).max() < 0.01


# ------------------------------------------------------------------ the pipeline


@pytest.fixture(scope="module")
def both_runs(files, tmp_path_factory):
    """The same config sampled, reduced and analysed at both granularities."""
    import datasets

    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", files["root"] / "cache")
        runs = {g: lk.run(lk.load_config(run_config(files, root / g, analysis=True,
                                                    granularity=g)), progress=False)
                for g in ("sequence", "token")}
    return runs


@pytest.mark.slow
def test_whole_pipeline_at_both_granularities(both_runs):
    for granularity, run in both_runs.items():
        store = RunStore.open(run.path / "store.zarr")
        texts = store.attributes()[TEXT_ATTRIBUTE]
        assert store.done().all()
        report = run.report_path.read_text()
        assert "Nearest neighbours" in report
        metrics = run.metrics
        assert metrics["neighbours"]["mean_top1_corr"] is not None
        # the report's neighbour table shows each sample's text (a token in its context,
        # the token highlighted)
        example = metrics["neighbours"]["examples"][0]
        assert example["text"] == texts[example["sample"]]
        assert example["top"][0]["text"] == texts[example["top"][0]["sample"]]
        assert '<q class="sample">' in report
        if granularity == "token":
            assert all(MARK_OPEN in t for t in texts)
            assert {"sequence", "position", "token_id", "token"} <= set(store.attributes())
            table = report.split("A few random samples")[1].split("</table>")[0]
            assert "<mark>" in table and MARK_OPEN not in table


def test_long_texts_are_cut_around_their_token():
    from losskernel_dist.analysis.sections.neighbours import cut_text

    text = "a" * 300 + MARK_OPEN + "tok" + MARK_CLOSE + "b" * 300
    short = cut_text(text, 60)
    assert MARK_OPEN + "tok" + MARK_CLOSE in short and short[0] == short[-1] == "\u2026"
    assert len(short) <= 62 and cut_text("plain " * 40, 20) == ("plain " * 40)[:20] + "\u2026"


@pytest.mark.slow
def test_sequence_kernel_is_the_block_sums_of_the_token_kernel(both_runs):
    seq = RunStore.open(both_runs["sequence"].path / "store.zarr")
    tok = RunStore.open(both_runs["token"].path / "store.zarr")
    # identical chains: the SGLD minibatch loss does not depend on the granularity
    assert np.array_equal(seq.group["train_loss"][...], tok.group["train_loss"][...])
    sequence = tok.attributes()["sequence"]
    onehot = np.zeros((len(sequence), sequence.max() + 1))
    onehot[np.arange(len(sequence)), sequence] = 1.0
    k_seq = np.asarray(seq.group["kernel/cov"][...])
    k_tok = np.asarray(tok.group["kernel/cov"][...])
    blocks = onehot.T @ k_tok @ onehot
    assert np.abs(k_seq).max() > 1e-3  # a kernel, not zeros
    np.testing.assert_allclose(blocks, k_seq, rtol=0, atol=1e-4 * np.abs(k_seq).max())
    losses_seq = np.asarray(seq.group["losses"][...])
    losses_tok = np.asarray(tok.group["losses"][...])
    np.testing.assert_allclose(losses_tok @ onehot, losses_seq, rtol=2e-6)


@pytest.mark.slow
def test_llama_architecture_both_granularities_agree(files, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", files["root"] / "cache")
    kernels = {}
    for g in ("sequence", "token"):
        data = run_config(files, tmp_path / g, granularity=g, model=str(files["llama"]))
        run = lk.run(lk.load_config(data), progress=False)
        kernels[g] = RunStore.open(run.path / "store.zarr")
    sequence = kernels["token"].attributes()["sequence"]
    sums = np.zeros((8 * 2, sequence.max() + 1))
    losses = np.asarray(kernels["token"].group["losses"][...]).reshape(16, -1)
    np.add.at(sums.T, sequence, losses.T)
    want = np.asarray(kernels["sequence"].group["losses"][...]).reshape(16, -1)
    np.testing.assert_allclose(sums, want, rtol=2e-6)


@pytest.mark.slow
def test_dropout_in_the_config_changes_no_draw(files, tmp_path, monkeypatch):
    """The model is in eval mode for the SGLD steps and the loss pass: dropout 0.3 in the
    config of the same weights gives bitwise the same draws as dropout 0."""
    import datasets
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", files["root"] / "cache")
    noisy = tmp_path / "model_with_dropout"
    model = AutoModelForCausalLM.from_pretrained(files["gpt2"], resid_pdrop=0.3,
                                                 embd_pdrop=0.3, attn_pdrop=0.3)
    model.save_pretrained(noisy)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (noisy / name).write_bytes((files["gpt2"] / name).read_bytes())
    assert json.loads((noisy / "config.json").read_text())["resid_pdrop"] == 0.3
    losses = {}
    for name, folder in (("plain", files["gpt2"]), ("dropout", noisy)):
        run = lk.sample(lk.load_config(run_config(files, tmp_path / name, model=str(folder))),
                        progress=False)
        losses[name] = np.asarray(RunStore.open(run.path / "store.zarr").group["losses"][...])
    assert np.array_equal(losses["plain"], losses["dropout"])
    assert np.unique(losses["plain"][:, :, 0]).size > 1  # the draws move


@pytest.mark.slow
def test_sample_params_moves_only_the_matched_parameters(files, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", files["root"] / "cache")
    glob = "transformer.h.1.*"
    task = load_task(TARGET, args(files, sample_params=[glob]))
    sampled = {n for n, p in task.model.named_parameters() if p.requires_grad}
    assert sampled and all(n.startswith("transformer.h.1.") for n in sampled)
    w_star = {n: p.detach().clone() for n, p in task.model.named_parameters()}
    sampler = run_config(files, tmp_path)["sampler"]
    run = lk.loss_kernel(task, tmp_path / "part", progress=False,
                         overrides={"analysis.enabled": False},
                         **{**sampler, "checkpoint_every": 4})
    state = read_checkpoint(next((run.path / "checkpoints").glob("chain_*.pt")))
    assert set(state.params) == sampled  # only these travel with the chain
    assert all(not torch.equal(state.params[n], w_star[n]) for n in sampled)  # and they moved
    # the model the chains ran on still holds w* in every parameter (bitwise)
    for name, p in task.model.named_parameters():
        assert torch.equal(p, w_star[name]), name
    # and the losses are those of w* with only the matched block moved
    full = load_task(TARGET, args(files))
    with torch.no_grad():
        for name, p in full.model.named_parameters():
            if name in sampled:
                p.copy_(state.params[name])
    stored = np.asarray(RunStore.open(run.path / "store.zarr").group["losses"][...])
    chain = state.chain
    last = full.loss(full.model.eval(), full.eval.tensors).detach().numpy()
    np.testing.assert_allclose(stored[chain, -1], last, rtol=1e-5)
    # tied names count: GPT-2's lm_head.weight is transformer.wte.weight
    tied = load_task(TARGET, args(files, sample_params=["lm_head.*"]))
    assert [n for n, p in tied.model.named_parameters() if p.requires_grad] == [
        "transformer.wte.weight"]


# ------------------------------------------------------------------ bad input


def cli_error(files, tmp_path, capsys, **task_args) -> str:
    """The one stderr line of ``losskernel run`` on a config with these task args."""
    path = tmp_path / "bad.yaml"
    data = run_config(files, tmp_path / "out")
    data["task"]["args"].update(task_args)
    path.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("losskernel: error:"), err
    assert not (tmp_path / "out").exists()
    return err[0]


def test_bad_input_is_one_clear_line(files, tmp_path, capsys, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", files["root"] / "cache")
    line = cli_error(files, tmp_path, capsys, model=str(tmp_path / "no_such_model"))
    assert "model directory not found" in line and "no_such_model" in line
    line = cli_error(files, tmp_path, capsys,
                     eval={"data_files": str(files["eval"]), "text_field": "body"})
    assert "text_field 'body' is not a column" in line and "text" in line
    line = cli_error(files, tmp_path, capsys, max_length=1)
    assert "max_length must be an integer >= 2" in line
    short = H.write_jsonl(tmp_path / "short.jsonl", [{"text": "a"}, {"text": ""}])
    line = cli_error(files, tmp_path, capsys, eval={"data_files": str(short)})
    assert "eval has no scored tokens" in line
    line = cli_error(files, tmp_path, capsys, sample_params=["transformer.h.9.*"])
    assert "'transformer.h.9.*' matches no parameter" in line
    line = cli_error(files, tmp_path, capsys, granularity="word")
    assert "granularity must be one of sequence, token" in line
    line = cli_error(files, tmp_path, capsys, eval={"data_files": str(tmp_path / "x.jsonl")})
    assert "x.jsonl does not exist" in line
    line = cli_error(files, tmp_path, capsys, text_field="text")  # not an argument
    assert "text_field" in line


def test_errors_are_the_package_errors(files):
    with pytest.raises(MissingFileError):
        hf.causal_lm(model="./missing/model", train={"data_files": str(files["train"])},
                     eval={"data_files": str(files["eval"])})
    with pytest.raises(TaskError, match="exactly one of data_files"):
        hf.causal_lm(model=str(files["gpt2"]), train={"text_field": "text"},
                     eval={"data_files": str(files["eval"])})
    with pytest.raises(TaskError, match="max_length 1000 exceeds the 128 positions"):
        hf.causal_lm(model=str(files["gpt2"]), train={"data_files": str(files["train"])},
                     eval={"data_files": str(files["eval"])}, max_length=1000)


# ------------------------------------------------------------------ the docs' config


def doc_config(heading: str) -> dict:
    """The first YAML block after ``heading`` in docs/byom_text.md."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "byom_text.md").read_text()
    block = text.split(heading, 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    return yaml.safe_load(block)


def test_the_docs_config_is_valid_and_builds_with_local_files(files):
    import inspect

    data = doc_config("## Hugging Face language models")
    config = lk.load_config({**data, "output": "runs/unused"})
    assert config.task.target == TARGET
    inspect.signature(hf.causal_lm).bind(**config.task.args)  # the argument names exist
    local = {**config.task.args, "model": str(files["gpt2"]), "revision": None,
             "train": {**config.task.args["train"], "data_files": str(files["train"]), "n": 40},
             "eval": {**config.task.args["eval"], "data_files": str(files["eval"]), "n": 8},
             "max_length": 24, "sample_params": ["transformer.h.1.*"]}
    task = load_task(TARGET, local)
    assert task.n_eval == 8 and task.n_train == 40
