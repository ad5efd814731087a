"""Running as one job of a parallel sweep (Hydra's joblib launcher, whose workers are loky
processes): DataLoader workers and CPU threads that suit it."""

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


def sweep_jobs() -> int | None:
    """`hydra.launcher.n_jobs` of the joblib sweep this process is a job of, else None."""
    if not in_loky_worker():
        return None
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    n = HydraConfig.get().launcher.get("n_jobs")
    if n is None:
        return 1
    n = int(n)
    return cores() if n < 0 else max(n, 1)


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
    import sys

    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


def submitit_executor() -> str | None:
    return os.environ.get("SUBMITIT_EXECUTOR")


def granted_cpus() -> int | None:
    """CPUs the launcher granted this job: Ray's `num_cpus` for the task, SLURM's
    `cpus_per_task` (or submitit_local's), else None (not such a job, or nothing granted)."""
    if in_ray_worker():
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        return max(1, int(cpus)) if cpus else None
    executor = submitit_executor()
    if executor is None:
        return None
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return max(1, int(os.environ["SLURM_CPUS_PER_TASK"]))
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        cpus = HydraConfig.get().launcher.get("cpus_per_task")
        if cpus is not None:
            return max(1, int(cpus))
    return None


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
