"""Where a chain of the ``sample`` job resumes from, and what a resume must match.

A chain resumes from the newest checkpoint that every draw kept at or before
its step is ``done`` for (``covered``), or from its start (w*) when there is
none: the commit order of ``commits.py`` (loss vectors, then checkpoint, then
``done`` flags) makes that state consistent after a kill at any instant, and
the draws after it are rewritten bit-identically, since every draw is a
function of (seed, chain, step) alone. Done draws whose losses chunk is gone
are unmarked first (``recover_lost_draws``), so that they are rewritten too.

A resume only adds draws that an uninterrupted run would have made: a
checkpoint must carry the key of the run's draw-changing config and
fingerprints (``checkpoint_key``), the task must match the fingerprints the
run was created with (``task_fingerprints``), and the numerics (device, torch,
threads, eval.batch_size, chain batching) must be the run's
(``check_numerics``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import ChainState, restore
from ..config import Config, draw_keys
from ..errors import RunDirError
from ..fingerprint import (
    batches_fingerprint,
    dataset_fingerprint,
    dict_fingerprint,
    model_fingerprint,
    numerics_description,
    samples_fingerprint,
)
from ..rundir import RunDir
from ..sampler.batched import batched_eval_mode
from ..sampler.chain import SGLDSettings
from ..sampler.data import EvalShards
from ..sampler.schedule import StepSchedule
from ..store import RunStore
from ..task import Task


def covered(schedule: StepSchedule, done_row: np.ndarray, step: int) -> bool:
    """True when every draw kept at or before ``step`` is done: a state to resume from."""
    return bool(done_row[: schedule.draws_kept_by(step)].all())


def resume_state(
    run_dir: Path, chain: int, settings: SGLDSettings, done_row: np.ndarray, ckpt_key: str
) -> ChainState | None:
    """The checkpoint to continue ``chain`` from (None: from its start), per the module doc."""

    def accept(state: ChainState) -> bool:
        if state.fingerprint != ckpt_key:
            raise RunDirError(
                f"checkpoint of chain {chain} was made with another config, model or eval "
                "set; refusing to resume from it"
            )
        return covered(settings.schedule, done_row, state.step)

    return restore(RunDir(run_dir).checkpoints, chain, accept)


def recover_lost_draws(store: RunStore, chains: list[int]) -> np.ndarray:
    """Mark not done the done draws of ``chains`` whose ``losses`` chunk is gone; the new
    ``done`` array. Their chains then resume from the newest checkpoint before them (or
    from w*) and rewrite them bitwise, since every draw is a function of (seed, chain,
    step): a lost chunk costs compute, never correctness."""
    done = store.done()
    mask = np.zeros_like(done)
    mask[chains] = done[chains]
    lost = store.missing_loss_chunks(mask)
    if not lost:
        return done
    by_chain: dict[int, list[int]] = {}
    for item in lost:
        by_chain.setdefault(item.chain, []).append(item.draw)
    for chain, draws in sorted(by_chain.items()):
        store.unmark_done(chain, sorted(set(draws)))
        print(f"losskernel: chain {chain}: {len(set(draws))} done draws lost their losses chunk "
              f"(first {lost[0].file}); recomputing them", file=sys.stderr)
    return store.done()


def task_fingerprints(task: Task, shards: EvalShards, run_dir: Path | None = None
                      ) -> dict[str, str]:
    """What a run is tied to besides its config: the trained weights, the eval samples
    (by content, whatever eval.batch_size) and the training set.

    Runs made before the content fingerprints recorded ``eval_set`` (a hash of the
    shards, so tied to eval.batch_size): for such a run in ``run_dir`` it is computed
    too, so that the run is still checked and resumes with its old checkpoints.
    """
    prints = {"model": model_fingerprint(task.model), "eval_samples": samples_fingerprint(shards),
              "train_set": dataset_fingerprint(task.train)}
    run = RunDir(run_dir) if run_dir is not None else None
    if run is not None and run.has_store() and "eval_set" in run.open_store().fingerprints:
        prints["eval_set"] = batches_fingerprint(shards)
    return prints


def checkpoint_key(config: Config, store: RunStore, fingerprints: dict[str, str]) -> str:
    """The key a chain checkpoint must carry to be resumed from: the draw-changing config
    and the fingerprints the run was created with (so older runs keep their checkpoints)."""
    kept = {k: fingerprints[k] for k in sorted(store.fingerprints) if k in fingerprints}
    return dict_fingerprint({**draw_keys(config), **kept})


def check_numerics(store: RunStore, device: torch.device, config: Config) -> None:
    """Refuse to add draws computed with other numerics (threads, device, torch) than the
    run's: the last bits of every draw would differ from an uninterrupted run's."""
    threads = torch.get_num_threads()
    mode = batched_eval_mode(config.sampler.batched_eval, device)
    mine = numerics_description(device, threads, config.sampler.chains_per_batch, mode,
                                config.eval.batch_size)
    stored = store.record_numerics(mine)
    if stored == mine:
        return
    old = dict(p.split("=", 1) for p in stored.split())
    new = dict(p.split("=", 1) for p in mine.split())
    diff = ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new))
                     if old.get(k) != new.get(k))
    settable = {"threads": "sampler.threads", "eval_batch_size": "eval.batch_size",
                "chains_per_batch": "sampler.chains_per_batch",
                "batched_eval": "sampler.batched_eval"}
    fixes = [f"{settable[k]}={old[k]}" for k in settable
             if k in old and old.get(k) != new.get(k)]
    same_machine = all(old.get(k) == new.get(k) for k in ("device", "torch"))
    hint = (f"set {' '.join(fixes)} to resume it bitwise" if fixes and same_machine else
            "resume it where it was sampled (same device and torch), or sample into a new "
            "output")
    raise RunDirError(
        f"run {str(config.run_dir)!r} was sampled with other numerics ({diff}); its draws "
        f"would not be bitwise those of one run: {hint}"
    )
