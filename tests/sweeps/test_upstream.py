"""What tl's launchers take from other projects beyond their public API, checked against the
installed versions: each test fails loudly, naming what changed, when an upgrade renames it."""

import inspect
import os
import signal

import pytest
from joblib.externals.loky import ProcessPoolExecutor
from joblib.externals.loky.process_executor import BrokenProcessPool

from tl.sweeps import launchers


def _die_by_sigkill():
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_loky_worker_killed_by_sigkill_is_reported_as_killed_by_sigkill():
    # The cause comes from loky's message ("The exit codes of the workers are {SIGKILL(-9)}").
    executor = ProcessPoolExecutor(max_workers=1)
    try:
        with pytest.raises(BrokenProcessPool) as error:
            executor.submit(_die_by_sigkill).result(timeout=120)
    finally:
        executor.shutdown(wait=True, kill_workers=True)
    cause = launchers.death_cause(error.value)
    assert cause.startswith("worker killed by SIGKILL — out of memory?"), str(error.value)


def test_the_joblib_plugin_still_runs_one_job_with_execute_job():
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    assert list(inspect.signature(execute_job).parameters) == [
        "idx", "overrides", "hydra_context", "config", "task_function", "singleton_state"]


def test_the_ray_plugin_still_starts_ray_and_one_job_as_tl_calls_them():
    util = pytest.importorskip("hydra_plugins.hydra_ray_launcher._launcher_util")
    assert list(inspect.signature(util.start_ray).parameters) == ["init_cfg"]
    assert list(inspect.signature(util.launch_job_on_ray).parameters) == [
        "hydra_context", "ray_remote", "sweep_config", "task_function", "singleton_state"]


def test_hydras_basic_sweeper_still_splits_jobs_as_the_preflight_check_lists_them():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(["a=1,2", "b=x,y", "c=3"])
    assert BasicSweeper.split_arguments(parsed, None) == [
        [["a=1", "b=x", "c=3"], ["a=1", "b=y", "c=3"], ["a=2", "b=x", "c=3"], ["a=2", "b=y", "c=3"]]]


def test_hydra_keeps_a_failed_jobs_exception_where_the_sweep_callback_reads_it():
    from hydra.core.utils import JobReturn, JobStatus

    from tl.errors import ConfigError
    from tl.sweeps import sweep

    ret = JobReturn(status=JobStatus.FAILED)
    ret.return_value = ConfigError("trainer.epochs=0 must be a positive integer")
    sweep.compact_failure(ret)
    with pytest.raises(sweep.JobError, match="^ConfigError: trainer.epochs=0 must be a positive integer$"):
        ret.return_value
