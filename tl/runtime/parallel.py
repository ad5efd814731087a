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
    the BLAS/OpenMP pools, rather than every job using all cores and each slowing the others."""
    n_jobs = sweep_jobs()
    if n_jobs is None:
        return
    share = max(1, cores() // n_jobs)
    if torch.get_num_threads() > share:
        torch.set_num_threads(share)
    if n_jobs > cores() and not torch.cuda.is_available():
        log.warning("hydra.launcher.n_jobs=%d is more than the %d CPU cores: jobs will slow each other; "
                    "use n_jobs <= %d", n_jobs, cores(), cores())


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
