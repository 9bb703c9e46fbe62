"""``losskernel submit``: the chains as a SLURM job array through submitit, then a reduce job.

1. Prepare, here: load the task, create the run (or check that an existing run
   matches the config) and refuse if a live process holds a chain of it. The
   store therefore exists before any task writes, and a config that would be
   refused queues nothing.
2. Array: one task per group of ``slurm.chains_per_task`` chains
   (``map_array``), each a ``SampleChains``, a ``submitit.helpers.Checkpointable``.
3. Reduce: one job with ``afterok`` on the whole array, so it starts only when
   every task succeeded. With ``reduce.scheduler: slurm`` that job is only the
   driver (one CPU): it starts a dask-jobqueue cluster of ``reduce.workers``
   worker jobs, which compute and write the tiles (``reduction/cluster.py``).
4. Record: ``RUN_DIR/slurm/submission.json`` (job ids and each task's chains,
   submission.py), which ``losskernel info`` reads.

Timeouts and preemption: SLURM sends USR2 ``slurm.signal_delay_s`` before the
time limit (``scancel --signal=USR2`` does the same by hand). The sampler's
handler turns it into a clean stop (draws, checkpoint, ``done`` flags) and
``SampleChains`` then hands the signal to submitit's own handler, which
requeues the task and exits. The requeued task calls the same function again
(the chain state is on disk, not in the pickle) and resumes every chain from
its checkpoint. Because draws depend only on (seed, chain, step), the finished
store is the same as an uninterrupted run's.

Failures: a task with a diverged chain raises ``ChainsFailed``, so SLURM marks
it FAILED and the reduce job can never start (with ``slurm.allow_partial`` the
task succeeds instead and the reduce job runs with ``--allow-partial``).
``submit --wait`` reports which task failed and why, and cancels the reduce
job; without ``--wait``, ``losskernel info`` shows the jobs' states.
Submitting a run again queues only the chain groups that still have work.

With ``slurm.cluster: local`` the tasks run as local submitit jobs (processes
on this machine, with the same signal and requeue handling); submitit has no
dependencies there, so ``submit`` waits for them and reduces in-process.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
import torch

from ..config import Config, ReduceScheduler, config_from_dict
from ..distributed import Placement, slurm_cpus_per_task
from ..errors import SubmitError
from ..locks import live_holders
from ..rundir import RunDir, prepare_run
from ..store import STATUS_OK
from .resume import task_fingerprints
from .sample import sample
from .signals import SamplingInterrupted
from .submission import sacct_states, write_submission

EXIT_INTERRUPTED = 75  # also the CLI's: stopped by a signal after a clean checkpoint



class ChainsFailed(RuntimeError):
    """Raised by an array task whose chains diverged, so that SLURM marks the task FAILED."""


def chain_groups(chains: int, per_task: int) -> list[list[int]]:
    """Chains 0..chains-1 in consecutive groups of ``per_task``: one group per array task."""
    return [list(range(i, min(i + per_task, chains))) for i in range(0, chains, per_task)]


def slurm_folder(config: Config) -> Path:
    """submitit's folder (pickles, logs) of a run."""
    return Path(config.slurm.folder) if config.slurm.folder else config.run_dir / "slurm"


def _hand_on(signum: int) -> None:
    """Give a stop signal to the handler that was installed before sampling's own.

    Inside a submitit job that is submitit's handler: for its preemption signal
    (USR2) it checkpoints this task's call, requeues it and exits.
    """
    handler = signal.getsignal(signum)
    if callable(handler):
        handler(signum, None)


class SampleChains(submitit.helpers.Checkpointable):
    """One array task: sample a group of chains of a prepared run.

    ``checkpoint`` (inherited) resubmits the same call: everything the chains
    need to continue is in the run directory, checkpointed by ``sample`` when
    the signal arrived, before submitit's handler runs.
    """

    def __call__(self, config_data: dict[str, Any], chains: list[int]) -> dict[str, Any]:
        config = config_from_dict(config_data)
        if not config.sampler.threads:
            config.sampler.threads = slurm_cpus_per_task() or config.slurm.cpus_per_task
        try:
            report = sample(config, chains=chains, placement=Placement(0, 1, 0), progress=False)
        except SamplingInterrupted as exc:
            print(f"losskernel: {exc}", file=sys.stderr, flush=True)
            if exc.signum == submitit.JobEnvironment._usr_sig():
                _hand_on(exc.signum)  # requeues and exits; returns only if it could not
            raise SystemExit(EXIT_INTERRUPTED) from exc
        if report.failed and not config.slurm.allow_partial:
            detail = "; ".join(f"{msg}" for _, msg in sorted(report.failed.items()))
            raise ChainsFailed(f"chains {sorted(report.failed)} failed: {detail}")
        return {"chains": chains, "draws_written": report.draws_written,
                "seconds": round(report.seconds, 3)}


def reduce_job_overrides(config: Config) -> dict[str, Any]:
    """Reduce settings the reduce job changes: the draws kept in memory (reduce.cache_gb)
    capped at half of the job's ``slurm.reduce_mem_gb`` when that is set, so that the
    tiles have the rest and the job is not killed for memory."""
    mem = config.slurm.reduce_mem_gb
    if mem and config.reduce.cache_gb > mem / 2:
        return {"cache_gb": mem / 2}
    return {}


def reduce_job(run_dir: str, allow_partial: bool) -> dict[str, Any]:
    """The reduce job: the kernel of a finished run, exactly what ``losskernel reduce`` does.

    Same dispatch as the CLI (``reduce.kernel``: dense kernel, streamed neighbours or
    both; ``reduce.engine``), from the run's own resolved config.
    """
    from .run import reduce_run_dir

    config = RunDir(run_dir).read_config()
    report = reduce_run_dir(run_dir, allow_partial=allow_partial,
                            reduce_overrides=reduce_job_overrides(config))
    return report.as_attrs()


def prepare(config: Config) -> bool:
    """Create or validate the run here, before anything is queued; True when created."""
    from ..sampler.data import EvalShards
    from ..task import IN_MEMORY_TARGET, load_task

    if config.task.target == IN_MEMORY_TARGET:
        raise SubmitError(
            "this run's task was built in memory (losskernel_dist.loss_kernel), which SLURM "
            "array tasks cannot rebuild: write a function returning the Task, set task.target "
            "to it and submit that config"
        )
    held = live_holders(RunDir(config.run_dir).locks)
    if held:
        chains = sorted(held)
        raise SubmitError(
            f"run {str(config.run_dir)!r} is being sampled (chains {chains} held by "
            f"{held[chains[0]].name}); refusing to submit a second writer"
        )
    task = load_task(config.task.target, config.task.args)
    # Streamed, not cached: the login node need not hold the whole eval set.
    shards = EvalShards(task.eval, config.eval.batch_size, torch.device("cpu"), cache=False)
    return prepare_run(config, task, task_fingerprints(task, shards, config.run_dir))


def make_executor(config: Config, folder: Path, *, reduce: bool = False) -> submitit.AutoExecutor:
    """The submitit executor for the array (or, with ``reduce``, for the reduce job)."""
    s = config.slurm
    cluster = None if s.cluster == "auto" else s.cluster
    executor = submitit.AutoExecutor(
        folder=str(folder / "%j"), cluster=cluster,
        slurm_max_num_timeout=s.max_requeues, local_max_num_timeout=s.max_requeues,
    )
    cpus = (s.reduce_cpus or s.cpus_per_task) if reduce else s.cpus_per_task
    if reduce and config.reduce.scheduler == ReduceScheduler.SLURM:
        cpus = 1  # the driver of a dask-jobqueue cluster: its worker jobs do the work
    mem = s.reduce_mem_gb if reduce else s.mem_gb
    params: dict[str, Any] = {
        "name": f"{s.job_name}-reduce" if reduce else s.job_name,
        "timeout_min": s.reduce_time_min if reduce else s.time_min,
        "cpus_per_task": cpus,
        "gpus_per_node": 0 if reduce else s.gpus_per_task,
        "tasks_per_node": 1,
        "nodes": 1,
        "slurm_signal_delay_s": s.signal_delay_s,
        "slurm_additional_parameters": dict(s.extra),
        "slurm_setup": list(s.setup),
    }
    if mem:
        params["mem_gb"] = mem
    if s.partition:
        params["slurm_partition"] = s.partition
    if s.max_parallel and not reduce:
        params["slurm_array_parallelism"] = s.max_parallel
    executor.update_parameters(**params)
    return executor


@dataclass
class Submission:
    """What ``submit`` queued: the array tasks (with their chains) and the reduce job."""

    run_dir: Path
    cluster: str
    folder: Path
    groups: list[list[int]]
    tasks: list[submitit.Job]
    reduce: submitit.Job | None = None
    reduced_here: dict[str, Any] | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def array_id(self) -> str:
        return self.tasks[0].job_id.split("_")[0] if self.tasks else ""

    def record(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "folder": str(self.folder),
            "array_job_id": self.array_id,
            "tasks": [{"job_id": j.job_id, "chains": g} for j, g in zip(self.tasks, self.groups,
                                                                       strict=True)],
            "reduce_job_id": self.reduce.job_id if self.reduce is not None else None,
            "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def unfinished_groups(config: Config) -> list[list[int]]:
    """The chain groups with work left: a healthy chain whose draws are not all done."""
    store = RunDir(config.run_dir).open_store()
    done, status = store.done(), store.chain_status()
    return [g for g in chain_groups(config.sampler.chains, config.slurm.chains_per_task)
            if any(status[c] == STATUS_OK and not done[c].all() for c in g)]


def submit(config: Config) -> Submission:
    """Prepare the run, queue its unfinished chain groups as an array (and, on SLURM, the
    reduce job after it) and record the submission. A resubmitted run queues only the groups
    that still have work; with none left, only the reduce job."""
    config = config_from_dict(config.to_dict())  # a private copy
    config.output = str(config.run_dir.resolve())  # tasks may start in another directory
    prepare(config)
    folder = slurm_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    groups = unfinished_groups(config)
    executor = make_executor(config, folder)
    cluster = executor.cluster
    data = config.to_dict()
    tasks = executor.map_array(SampleChains(), [data] * len(groups), groups) if groups else []
    sub = Submission(config.run_dir, cluster, folder, groups, list(tasks))
    if cluster == "slurm" and config.slurm.reduce:
        red = make_executor(config, folder, reduce=True)
        if sub.tasks:
            red.update_parameters(slurm_dependency=f"afterok:{sub.array_id}")
        sub.reduce = red.submit(reduce_job, str(config.run_dir), config.slurm.allow_partial)
    write_submission(folder, sub.record())
    return sub


_TELLING_STATES = ("CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                   "BOOT_FAIL", "DEADLINE")


def _failed_label(job: submitit.Job) -> str:
    """'FAILED', with SLURM's state when it says more (sacct may still lag and say RUNNING)."""
    state = (job.state or "").split()[0] if job.state else ""
    return f"FAILED ({state})" if state in _TELLING_STATES else "FAILED"


def _error_line(job: submitit.Job) -> str:
    """The most specific line of a failed job's error: the exception line of its traceback."""
    try:
        exc = job.exception()
    except Exception as err:  # no result at all: killed, cancelled, node failure
        text = str(err)
    else:
        if exc is None:
            return "no error recorded"
        text = str(exc)
    lines = []
    for line in (x.strip() for x in text.splitlines()):
        if line.startswith("You can check full logs"):  # submitit's trailing block of log paths
            break
        if line and line.strip("-"):
            lines.append(line)
    return lines[-1] if lines else "no error recorded"


_SLURM_ACTIVE = frozenset({"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED",
                           "REQUEUED", "RESIZING", "STAGE_OUT"})


def _await_slurm_end(job_id: str, *, poll_s: float, limit_s: float = 300.0) -> None:
    """Wait until SLURM no longer reports ``job_id`` as active (at most ``limit_s``).

    submitit hands back a job's result as soon as the job has written it, while
    the job itself still shuts down (the reduce driver stops its Dask cluster and
    worker jobs). ``submit --wait`` returns only once SLURM has seen the job end,
    so ``losskernel info`` then shows its final state and a ``scancel`` by name
    right after cannot cut the job's own cleanup short.
    """
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        state = sacct_states([job_id]).get(job_id)
        if state is None or state not in _SLURM_ACTIVE:
            return
        time.sleep(min(poll_s, 2.0))


def wait(sub: Submission, *, poll_s: float = 5.0, reduce_here: bool = False,
         allow_partial: bool = False) -> Submission:
    """Wait for the array (and reduce job); fill ``sub.failures`` with one line per failed task.

    A failed task makes the ``afterok`` reduce job unable to start: it is
    cancelled. ``reduce_here`` reduces in this process once every task
    succeeded (for clusters without dependencies).
    """
    pending = list(zip(sub.tasks, sub.groups, strict=True))
    while pending:
        still = []
        for job, group in pending:
            if job.done():
                try:
                    job.result()
                except Exception:
                    sub.failures.append(
                        f"array task {job.job_id} (chains {group}) {_failed_label(job)}: "
                        f"{_error_line(job)}; log {job.paths.stderr}"
                    )
            else:
                still.append((job, group))
        pending = still
        if pending:
            time.sleep(poll_s)
    if sub.failures:
        if sub.reduce is not None:
            sub.reduce.cancel(check=False)
        return sub
    if sub.reduce is not None:
        try:
            sub.reduce.result()
        except Exception:
            sub.failures.append(
                f"reduce job {sub.reduce.job_id} {_failed_label(sub.reduce)}: "
                f"{_error_line(sub.reduce)}; log {sub.reduce.paths.stderr}"
            )
        if sub.cluster == "slurm":
            _await_slurm_end(sub.reduce.job_id, poll_s=poll_s)
    elif reduce_here:
        sub.reduced_here = reduce_job(str(sub.run_dir), allow_partial)
    return sub
