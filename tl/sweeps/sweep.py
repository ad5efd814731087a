"""One MLflow parent run per Hydra multirun, with a child run per job.

The parent is created in `on_multirun_start`, before any job touches the store, and its id
travels with every job: it is added to the sweep's Hydra overrides as
`hydra.job.env_set.TL_SWEEP_PARENT_RUN`, so each job's own config carries it to wherever the
launcher runs the job (in-process, loky workers, Ray workers, SLURM nodes), and Hydra sets it
in the job's environment. A multirun job without it, or whose parent is not in its store, is
an error: it never logs as a run outside its sweep.
Hydra skips `on_multirun_end` when a job failed (hydra#2284), so `finish_all()` also runs from
`tl.train.main`'s `finally`: the parent always ends, FAILED if any child did not finish. A
child still RUNNING then lost its process: it is marked FAILED with the cause when its
launcher saw the worker die (the OOM killer, a segfault), else KILLED (a second Ctrl-C, a
SIGKILL), resumable either way.
Before anything is created, every job's config is composed and checked (`tl.sweeps.preflight`):
a sweep with a job that cannot run starts none, and says why for each.
The sweep's state in this process lives in `tl.sweeps.state.SWEEP`, which this module owns.
"""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path
from typing import Sequence

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from tl.data import ahead
from tl.errors import TLError
from tl.runtime import signals
from tl.sweeps import launchers, preflight
from tl.sweeps.state import SWEEP, Parent
from tl.tracking import redact, store

log = logging.getLogger(__name__)

PARENT_ENV = "TL_SWEEP_PARENT_RUN"

__all__ = ["JobError", "MlflowSweepCallback", "Parent", "SweepError", "children", "finish",
           "finish_all", "in_multirun", "launched", "parent_for_job"]


class SweepError(TLError):
    """A multirun job that cannot tell which sweep it belongs to."""


def in_multirun() -> bool:
    """Whether this process runs the jobs of a Hydra multirun (`-m`)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def parent_for_job(uri: str) -> Parent | None:
    """The sweep's parent run, when this job is part of a multirun, from the job's own config.
    Raises when a multirun job has none, or its parent is not in `uri`'s store, and
    `signals.JobKilled` when the sweep was stopped before this job began."""
    if not in_multirun():
        return None
    hc = HydraConfig.get()
    SWEEP.check_can_launch()  # in-process jobs (Hydra's basic launcher) of a refused sweep
    run_id = hc.job.env_set.get(PARENT_ENV)
    if not run_id:
        raise SweepError(
            f"this job (#{hc.job.get('num')}) is part of a multirun but carries no sweep parent run "
            f"(hydra.job.env_set.{PARENT_ENV}), so it would log outside its sweep. tl's sweep callback "
            "sets it: keep hydra.callbacks.mlflow_sweep (conf/train.yaml), or run the job alone "
            "without -m.")
    client = store.client_for(uri)
    try:
        run = client.get_run(str(run_id))
    except Exception as e:
        raise SweepError(
            f"this job's sweep parent run {run_id} is not in the store {uri} ({type(e).__name__}): "
            "every job of a sweep must log where the sweep does; do not sweep tracking.uri") from None
    stopping = run.data.tags.get("tl.stopping")
    if stopping:
        raise signals.JobKilled(f"the sweep was stopped by {stopping} before this job began; "
                                "it started no run")
    return Parent(uri, run.info.experiment_id, run.info.run_id)


def launched(n: int) -> None:
    """A sweeper or launcher handed `n` more jobs out (negative: fewer runs than jobs to count)."""
    SWEEP.launched(n)


class JobError(CompactHydraException):
    """A job's user error (bad config or data, a stop signal): Hydra prints its message alone,
    one line, where it printed the traceback of any exception a job raised."""


def compact_failure(job_return) -> None:
    """Give a job that failed on a user error a one-line error in place of its exception."""
    # Hydra keeps a failed job's exception in the private `_return_value` (the public
    # `return_value` raises it, and says so on stderr); tests/sweeps/test_upstream.py fails if
    # that changes.
    error = getattr(job_return, "_return_value", None)
    if job_return is not None and job_return.status == JobStatus.FAILED \
            and isinstance(error, (TLError, signals.JobKilled)):
        job_return.return_value = JobError(f"{type(error).__name__}: {' '.join(str(error).split())}")


class MlflowSweepCallback(Callback):
    """`checks`: functions (by dotted name) each job's composed config must pass before the
    sweep starts (conf/train.yaml names tl's config checks)."""

    def __init__(self, checks: Sequence[str] = ()):
        self.checks = list(checks)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        SWEEP.begin()
        launchers.adopt(config)
        # Each job's config is recomposed from the Hydra overrides plus its own (Hydra's
        # load_sweep_config), so this one reaches every job, in any launcher. Its value, the
        # parent run, is created once the jobs are checked (`_start`).
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.overrides.hydra.append(f"++hydra.job.env_set.{PARENT_ENV}={preflight.PENDING}")
        try:
            first = preflight.check(config, self.checks)
        except preflight.SweepConfigError as e:
            # A user error: the message, no traceback, exit status 2 as for a single run. Raised
            # as SystemExit, which Hydra lets through (any other exception here it turns into a
            # warning, and the sweep would go on).
            print(f"tl-train: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        if first is not None and launchers.kind(config.hydra.launcher) == "basic":
            ahead.start(first.dataset)  # its images checked on a spare core while the store opens
        try:
            self._start(config)
        except Exception as e:
            ahead.stop()
            SWEEP.refuse(e)
            raise

    def _start(self, config: DictConfig) -> None:
        uri = store.resolve_uri(config.tracking)
        redact.protect(uri)  # the launcher logs each job's overrides
        launchers.check_store(config, uri)  # before anything is created or launched
        client = store.prepare_store(uri)
        exp_id = store.experiment_id(client, config.tracking.experiment, uri)
        sweep_dir = Path(config.hydra.sweep.dir)
        overrides = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)  # as written
        run = client.create_run(
            exp_id,
            run_name=f"sweep {sweep_dir.name}",
            tags={"tl.role": "sweep", "tl.sweep_dir": str(sweep_dir.resolve()),
                  "tl.overrides": redact.text(" ".join(overrides)), "tl.git_commit": store.git_commit()},
        )
        parent = Parent(uri, exp_id, run.info.run_id)
        preflight.settle(GlobalHydra.instance().config_loader(), config, PARENT_ENV, parent.run_id)
        SWEEP.parents.append(parent)
        log.info("sweep parent run %s in experiment %s", parent.run_id, exp_id)

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        # Runs where the job runs: here, in this process, only with Hydra's basic launcher
        # (the other launchers count their jobs as they hand them out).
        if SWEEP.parents and not _launcher_counts():
            SWEEP.launched(1)

    def on_job_end(self, config: DictConfig, job_return=None, **kwargs) -> None:
        # Runs where the job ran, before its result goes back to the launcher.
        if in_multirun():
            compact_failure(job_return)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        finish_all()


def _launcher_counts() -> bool:
    return HydraConfig.initialized() and launchers.kind(HydraConfig.get().launcher) != "basic"


def children(client, parent: Parent):
    return client.search_runs(
        [parent.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.run_id}'",
        max_results=10000, order_by=["attributes.start_time ASC"],
    )


def finish(parent: Parent, stopped_by: str | None = None) -> bool:
    """End the parent run from its children's statuses (KILLED when a signal `stopped_by`
    stopped the sweep); print failures and where to look. Returns whether every job finished."""
    client = store.client_for(parent.uri)
    runs = children(client, parent)
    if any(r.info.status == "RUNNING" for r in runs):
        # Every job has returned by now: a RUNNING child's process died without closing it.
        for r in runs:
            if r.info.status == "RUNNING":
                _close_orphan(client, r)
        runs = children(client, parent)
    errors = {r.info.run_id: r.data.tags.get("tl.error", "") for r in runs}
    failed = [r for r in runs if r.info.status != "FINISHED"]
    done = [r for r in runs if r.info.status == "FINISHED"]
    jobs = max(parent.launched, len(runs))
    no_run = jobs - len(runs)  # failed before logging, or never started (a stopped sweep)
    if done:
        best = max(done, key=lambda r: r.data.metrics.get("best_val_acc", -1.0))
        client.set_tag(parent.run_id, "tl.best_run", best.info.run_name)
        client.log_metric(parent.run_id, "best_val_acc", best.data.metrics.get("best_val_acc", 0.0))
    client.log_metric(parent.run_id, "runs_finished", len(done))
    client.log_metric(parent.run_id, "runs_failed", len(failed) + no_run)
    client.log_metric(parent.run_id, "jobs_launched", jobs)
    ok = bool(runs) and not failed and not no_run and stopped_by is None
    if stopped_by is not None:
        client.set_tag(parent.run_id, "tl.error_type", stopped_by)
        client.set_tag(parent.run_id, "tl.error", f"sweep stopped by {stopped_by}; resume each "
                                                   "KILLED child with: tl-train +resume=RUN_ID")
    client.set_terminated(parent.run_id, "FINISHED" if ok else "KILLED" if stopped_by else "FAILED")

    print(f"\ntl sweep: {len(done)} of {jobs} runs finished (parent run {parent.run_id})"
          + (f", stopped by {stopped_by}" if stopped_by else ""))
    if no_run:
        print(f"  {no_run} of the {jobs} jobs launched logged no run: "
              + ("never started (the sweep was stopped)" if stopped_by else
                 "each failed before it could log (the launcher's output above says why)"))
    for r in failed:  # a KILLED run's tl.error says how to resume it
        print(f"  {r.info.status}: {r.info.run_name} (run {r.info.run_id})  "
              f"[{r.data.tags.get('tl.overrides', '')}]\n    {errors[r.info.run_id]}")
    print("Open the runs in MLflow:\n" + store.ui_hint(parent.uri, parent.experiment_id,
                                                         [r.info.run_id for r in runs]))
    return ok


def _close_orphan(client, run) -> None:
    """End a child whose process died: FAILED with the cause when its launcher saw the worker
    die (the OOM killer, a segfault), else KILLED (a SIGKILL, a second Ctrl-C). Resumable."""
    tags = run.data.tags
    cause = SWEEP.dead_workers.get((tags.get("tl.host", socket.gethostname()), tags.get("tl.pid", "")))
    resume = f"resume with: tl-train +resume={run.info.run_id}"
    if cause is not None:
        client.set_tag(run.info.run_id, "tl.error_type", "WorkerDied")
        client.set_tag(run.info.run_id, "tl.error", f"{cause}; {resume}")
        client.set_terminated(run.info.run_id, "FAILED")
        return
    client.set_tag(run.info.run_id, "tl.error_type", "ProcessDied")
    client.set_tag(run.info.run_id, "tl.error", f"its process ended without closing the run; {resume}")
    client.set_terminated(run.info.run_id, "KILLED")


def finish_all(stopped_by: str | None = None) -> bool:
    """End every parent this process started (see `finish`); whether every job finished."""
    ok = True
    while (parent := SWEEP.take()) is not None:
        try:
            ok = finish(parent, stopped_by) and ok
        except Exception:  # never mask the sweep's own error with a reporting one
            log.exception("could not finish sweep parent run %s", parent.run_id)
            ok = False
    return ok
