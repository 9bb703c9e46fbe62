"""The dask clusters a reduce can run on (``reduce.scheduler``), and running its tasks there.

``threads`` needs none of this: the tiles run on a pool of threads in this
process (reduction/kernel.py's ``tiles_on_threads``). The other settings open a ``distributed`` client:

- ``local``: a ``distributed.LocalCluster`` of ``reduce.workers`` processes with
  ``reduce.worker_cores`` threads and ``reduce.worker_mem_gb`` each. A worker
  process that dies is restarted by its nanny.
- ``slurm``: a ``dask_jobqueue.SLURMCluster``, one worker per SLURM job of
  ``worker_cores`` CPUs, ``worker_mem_gb`` and ``worker_walltime_min``, in
  ``slurm.partition`` with ``slurm.extra``'s account (other ``slurm.extra``
  options become ``#SBATCH`` lines, ``slurm.setup`` runs first, logs go to
  ``RUN_DIR/slurm/dask-workers``). It is kept at ``reduce.workers`` jobs by
  dask's adaptive scaling, which submits a new job for one that was cancelled,
  preempted or reached its time limit; workers retire a little before the
  limit (dask's ``--lifetime``) so that their running tiles move elsewhere.
- ``tcp://host:port``: a scheduler the user already runs, with its workers.

Lost work is dask's to redo: a task whose worker died is rerun elsewhere (up to
``ALLOWED_FAILURES`` deaths per task, instead of dask's 3, before it is
``KilledWorker``) and a task that raised is retried ``TASK_RETRIES`` times. Tile
and row-block tasks are idempotent (they write the same bits again), so a
rerun is always safe; what they finished is flagged in the store, so a reduce
that fails anyway resumes from there.

``distributed`` and ``dask_jobqueue`` are imported only here, and only when a
cluster is asked for: the threaded reduce does not load them.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask

from ..config import ReduceConfig, ReduceScheduler, SlurmConfig
from ..errors import LosskernelError

TASK_RETRIES = 2  # reruns of a task that raised (a transient file-system error)
ALLOWED_FAILURES = 10  # worker deaths a task may see before dask gives up on it


class ClusterError(LosskernelError):
    """The cluster asked for by reduce.scheduler cannot be started or reached."""


def _peak_rss() -> int:
    """This process's peak resident memory in bytes (VmHWM), run on each worker."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class ReduceCluster:
    """A connected dask client and what the reduce record says about it."""

    client: Any  # distributed.Client
    kind: str  # local, slurm or the scheduler address
    requested: int  # workers asked for (0: an existing cluster's own)
    cache_bytes: int  # centred draws a worker may keep in memory
    ran_on: set[str] = field(default_factory=set)

    @property
    def dashboard(self) -> str | None:
        """The dashboard's address when the scheduler serves one (it needs bokeh)."""
        info = self.client.scheduler_info()
        return self.client.dashboard_link if "dashboard" in info.get("services", {}) else None

    def compute(self, tasks: list) -> tuple:
        """Results of ``tasks`` (delayed objects) in order, computed on the workers."""
        futures = self.client.compute(tasks, retries=TASK_RETRIES)
        return tuple(self.client.gather(futures))

    def run(self, tasks: list, bar: Any) -> list:
        """Compute ``tasks`` (each returns the process that ran it), advancing ``bar``
        as each finishes on whichever worker; on an error or interrupt the rest are
        cancelled (their finished work stays flagged in the store)."""
        from distributed import as_completed

        futures = self.client.compute(tasks, retries=TASK_RETRIES)
        results = []
        try:
            for future in as_completed(futures):
                results.append(future.result())
                bar.update(1)
        except BaseException:
            self.client.cancel(futures)
            raise
        self.ran_on.update(r for r in results if isinstance(r, str))
        return results

    def describe(self) -> dict[str, Any]:
        """For the reduce record: scheduler, workers now and asked for, who ran tasks,
        and each live worker's peak memory (MiB)."""
        peaks = self.client.run(_peak_rss)
        return {
            "scheduler": self.kind,
            "workers": len(peaks),
            "workers_requested": self.requested,
            "worker_processes_used": len(self.ran_on),
            "worker_peak_rss_mib": sorted(round(v / 2**20, 1) for v in peaks.values()),
            "dashboard": self.dashboard,
        }


def worker_cache_bytes(settings: ReduceConfig) -> int:
    """Centred draws each worker may keep: reduce.cache_gb, at most half its memory."""
    return int(min(settings.cache_gb, settings.worker_mem_gb / 2) * 2**30)


def lifetime_args(walltime_min: int) -> list[str]:
    """dask-worker options that retire a worker before its job's time limit, staggered so
    that workers do not all leave at once (dask-jobqueue's advice for adaptive clusters)."""
    margin = max(1, walltime_min // 20)
    if walltime_min <= 3 * margin:
        return []
    return ["--lifetime", f"{walltime_min - 2 * margin}m", "--lifetime-stagger", f"{margin}m"]


def _slurm_cluster(settings: ReduceConfig, slurm: SlurmConfig, log_dir: Path) -> Any:
    """A SLURMCluster kept at ``settings.workers`` jobs by adaptive scaling."""
    from dask_jobqueue import SLURMCluster

    extra = dict(slurm.extra)
    account = extra.pop("account", None)
    log_dir.mkdir(parents=True, exist_ok=True)
    cluster = SLURMCluster(
        queue=slurm.partition or None, account=account,
        cores=settings.worker_cores, processes=1, memory=f"{settings.worker_mem_gb}GiB",
        walltime=f"{settings.worker_walltime_min // 60:02d}:{settings.worker_walltime_min % 60:02d}:00",
        job_name=f"{slurm.job_name}-dask", python=sys.executable,
        job_extra_directives=[f"--{k.replace('_', '-')}={v}" for k, v in extra.items()],
        job_script_prologue=list(slurm.setup), log_directory=str(log_dir),
        worker_extra_args=lifetime_args(settings.worker_walltime_min),
    )
    cluster.adapt(minimum_jobs=settings.workers, maximum_jobs=settings.workers)
    return cluster


@contextlib.contextmanager
def open_cluster(settings: ReduceConfig, slurm: SlurmConfig, log_dir: Path,
                 *, announce: bool = True) -> Iterator[ReduceCluster | None]:
    """The cluster ``settings.scheduler`` names, closed on exit; None for ``threads``.

    ``log_dir`` holds the SLURM worker jobs' logs. With ``announce`` a line on
    stderr says where the reduce runs (and the dashboard's address, when there is one).
    """
    kind = settings.scheduler
    if kind == ReduceScheduler.THREADS:
        yield None
        return
    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        stack.enter_context(dask.config.set({
            "distributed.scheduler.allowed-failures": ALLOWED_FAILURES}))
        try:
            if kind == ReduceScheduler.LOCAL:
                cluster = stack.enter_context(LocalCluster(
                    n_workers=settings.workers, threads_per_worker=settings.worker_cores,
                    processes=True, memory_limit=f"{settings.worker_mem_gb}GiB",
                    dashboard_address=":0", silence_logs=logging.ERROR))
                client = stack.enter_context(Client(cluster))
            elif kind == ReduceScheduler.SLURM:
                cluster = stack.enter_context(_slurm_cluster(settings, slurm, log_dir))
                client = stack.enter_context(Client(cluster))
            else:
                client = stack.enter_context(Client(str(kind), timeout="30s"))
        except (OSError, TimeoutError, RuntimeError) as exc:
            raise ClusterError(f"reduce.scheduler {kind}: cannot start or reach the cluster "
                               f"({exc})") from exc
        requested = 0 if str(kind).startswith(("tcp://", "tls://")) else settings.workers
        reduce_cluster = ReduceCluster(client, str(kind), requested,
                                       worker_cache_bytes(settings))
        if announce:
            where = f"{requested} workers" if requested else "its workers"
            print(f"losskernel: reduce on dask cluster {kind} ({where})"
                  + (f", dashboard {reduce_cluster.dashboard}" if reduce_cluster.dashboard
                     else ""), file=sys.stderr, flush=True)
        yield reduce_cluster
