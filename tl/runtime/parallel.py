"""Running as one job of a parallel sweep: DataLoader workers and CPU threads that suit it, so
that the jobs running at once use at most the cores there are (n_jobs x threads <= cores).

A job learns what it was granted from its own Hydra launcher config, which travels with it:
joblib's `n_jobs` (its loky workers share this machine's cores), Ray's `ray.remote.num_cpus`,
submitit's `cpus_per_task` (or SLURM's own variable). Nothing here imports Ray
(`tl.sweeps.ray_jobs` is tl's one Ray module)."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os

import torch

log = logging.getLogger(__name__)


def in_loky_worker() -> bool:
    # loky makes its own start method the worker's default (so no new public API to ask).
    return multiprocessing.get_start_method(allow_none=True) == "loky"


def loader_context(num_workers: int):
    """The multiprocessing context for DataLoader workers: loky's own inside a loky worker,
    where the default one crashes (`'Process' object has no attribute 'env'`, hydra#964)."""
    if num_workers == 0 or not in_loky_worker():
        return None
    from joblib.externals.loky.backend.context import get_context

    return get_context("loky")


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def workers(n_jobs) -> int:
    """How many jobs joblib runs at once for `n_jobs` (None: 1; -1: every core; -2: all but one)."""
    if n_jobs is None:
        return 1
    n = int(n_jobs)
    return max(1, cores() + 1 + n) if n < 0 else max(n, 1)


def _launcher():
    """This job's Hydra launcher config, or None outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().launcher if HydraConfig.initialized() else None


def sweep_jobs() -> int | None:
    """How many jobs the joblib sweep this process is a job of runs at once, else None."""
    if not in_loky_worker() or _launcher() is None:
        return None
    return workers(_launcher().get("n_jobs"))


def limit_threads() -> None:
    """Parallel jobs share the cores: each gets cores // n_jobs torch threads, as joblib gives
    the BLAS/OpenMP pools, rather than every job using all cores and each slowing the others.
    A job of a Ray or submitit sweep gets the CPUs its launcher granted it."""
    granted = granted_cpus()
    if granted is not None:
        torch.set_num_threads(granted)
        return
    n_jobs = sweep_jobs()
    if n_jobs is None:
        return
    share = max(1, cores() // n_jobs)
    if torch.get_num_threads() > share:
        torch.set_num_threads(share)
    if n_jobs > cores() and not torch.cuda.is_available():
        log.warning("hydra.launcher.n_jobs=%d is more than the %d CPU cores: jobs will slow each other; "
                    "use n_jobs <= %d", n_jobs, cores(), cores())


def in_sweep_worker() -> bool:
    """Whether this process runs a job for a launcher elsewhere (so a signal here ends this
    job only, as a failed job, and the sweep goes on)."""
    return in_loky_worker() or in_ray_worker() or submitit_executor() is not None


def in_ray_worker() -> bool:
    # Hydra's Ray launcher runs every job in a Ray task, never in the launching process.
    launcher = _launcher()
    return launcher is not None and launcher.get("ray") is not None and _multirun()


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def submitit_executor() -> str | None:
    return os.environ.get("SUBMITIT_EXECUTOR")


def granted_cpus() -> int | None:
    """CPUs the launcher granted this job: Ray's `num_cpus` for the task, SLURM's
    `cpus_per_task` (or submitit_local's), else None (not such a job, or nothing granted)."""
    if in_ray_worker():
        cpus = _launcher().ray.remote.get("num_cpus")
        return max(1, int(cpus)) if cpus else 1  # Ray reserves one CPU for a task by default
    executor = submitit_executor()
    if executor is None:
        return None
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return max(1, int(os.environ["SLURM_CPUS_PER_TASK"]))
    cpus = _launcher().get("cpus_per_task") if _launcher() is not None else None
    return max(1, int(cpus)) if cpus is not None else None


@contextlib.contextmanager
def intra_op_threads(n: int | None):
    """torch's intra-op threads set to `n` (at most what they were) for the block; None: unchanged."""
    before = torch.get_num_threads()
    if n is None or n >= before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
