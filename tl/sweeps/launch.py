"""What every tl launch shares: its start (`begin`), waiting for its jobs under a possible
stop signal (`wait_for_jobs`), and the result of a job that returned none (`failed_job`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Sequence

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals

from tl.sweeps.state import SWEEP
from tl.sweeps.stopping import STOP_GRACE_SECONDS, Stop

log = logging.getLogger(__name__)


def begin(launcher, job_overrides, initial_job_idx) -> Path:
    """What every launch does first (as the plugins do): refuse a refused sweep, set up Hydra's
    logging and the sweep folder, list the jobs. Returns the sweep folder."""
    SWEEP.check_can_launch()
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info("Launching %d jobs, sweep output dir: %s", len(job_overrides), sweep_dir)
    for i, overrides in enumerate(job_overrides):
        log.info("\t#%d : %s", initial_job_idx + i, " ".join(filter_overrides(overrides)))
    return sweep_dir


def wait_for_jobs(stop: Stop, collect: Callable[[], bool], pause: float = 0.0,
                  grace: float = STOP_GRACE_SECONDS) -> bool:
    """Call `collect()` (which gathers what has returned, and says whether every job has) until
    it is done; once `stop` has a signal, give the jobs `grace` seconds, then `force()` them.
    `pause`: seconds between calls, for a `collect` that does not block. Returns whether every
    job returned."""
    deadline = None
    while not collect():
        if stop.signum is not None:
            deadline = deadline or time.monotonic() + grace
            if time.monotonic() > deadline:
                stop.force()
                return False
        time.sleep(pause)
    return True


def failed_job(overrides: Sequence[str], idx: int, error: BaseException) -> JobReturn:
    """The JobReturn of a job whose worker died, or that never started, with why."""
    ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
    ret.return_value = error
    ret.status = JobStatus.FAILED
    log.error("job #%d (%s) ended without a result: %s", idx, " ".join(overrides), error)
    return ret
