"""One MLflow parent run per Hydra multirun, with a child run per job.

The parent is created in `on_multirun_start`, before any job touches the store, and its id
travels with every job: it is added to the sweep's Hydra overrides as
`hydra.job.env_set.TL_SWEEP_PARENT_RUN`, so each job's own config carries it to wherever the
launcher runs the job (in-process, loky workers, Ray workers, SLURM nodes), and Hydra sets it
in the job's environment. A multirun job without it, or whose parent is not in its store, is
an error: it never logs as a run outside its sweep.
Hydra skips `on_multirun_end` when a job failed (hydra#2284), so `finish_all()` also runs from
`tl.train.main`'s `finally`: the parent always ends, FAILED if any child did not finish. A
child still RUNNING then lost its process (SIGKILL, a crash): it is marked KILLED, resumable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from tl.errors import TLError
from tl.runtime import signals
from tl.tracking import redact, store

log = logging.getLogger(__name__)

PARENT_ENV = "TL_SWEEP_PARENT_RUN"


class SweepError(TLError):
    """A multirun job that cannot tell which sweep it belongs to."""


@dataclass
class Parent:
    uri: str
    experiment_id: str
    run_id: str
    launched: int = 0  # jobs handed to the launcher, whether or not they logged a run


_ACTIVE: list[Parent] = []
# Why this sweep must not launch: Hydra turns a callback's exception into a warning and goes
# on, so the error is kept here and raised by tl's launchers (and in-process jobs) instead.
_REFUSED: list[Exception] = []


def check_can_launch() -> None:
    """Raise the error that stopped `on_multirun_start`, before any job is launched."""
    if _REFUSED:
        raise _REFUSED[-1]


def in_multirun() -> bool:
    """Whether this process runs the jobs of a Hydra multirun (`-m`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def parent_for_job(uri: str) -> Parent | None:
    """The sweep's parent run, when this job is part of a multirun, from the job's own config.
    Raises when a multirun job has none, or its parent is not in `uri`'s store, and
    `signals.JobKilled` when the sweep was stopped before this job began."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    check_can_launch()  # in-process jobs (Hydra's basic launcher) of a refused sweep
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
    """A launcher handed `n` more jobs to its workers: the sweep's count covers them all."""
    for parent in _ACTIVE:
        parent.launched += n


def mark_stopping(signal_name: str) -> None:
    """Jobs that start after a stop signal see this on their parent and begin no run."""
    for parent in _ACTIVE:
        store.client_for(parent.uri).set_tag(parent.run_id, "tl.stopping", signal_name)


class MlflowSweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from tl.sweeps import launchers

        _REFUSED.clear()
        launchers.adopt(config)
        try:
            self._start(config)
        except Exception as e:
            _REFUSED.append(e)
            raise

    def _start(self, config: DictConfig) -> None:
        from tl.sweeps import launchers

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
        # Each job's config is recomposed from these overrides plus its own (hydra's
        # load_sweep_config), so this one reaches every job, in any launcher.
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.overrides.hydra.append(f"++hydra.job.env_set.{PARENT_ENV}={parent.run_id}")
        _ACTIVE.append(parent)
        log.info("sweep parent run %s in experiment %s", parent.run_id, exp_id)

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        # Runs where the job runs: here, in this process, only with Hydra's basic launcher
        # (the other launchers count their jobs as they hand them out).
        if _ACTIVE and not _launcher_counts():
            launched(1)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        finish_all()


def _launcher_counts() -> bool:
    from hydra.core.hydra_config import HydraConfig

    from tl.sweeps import launchers

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
    errors = {r.info.run_id: r.data.tags.get("tl.error", "") for r in runs}
    for r in runs:  # every job has returned by now: a RUNNING child's process was killed
        if r.info.status == "RUNNING":  # (SIGKILL, a second Ctrl-C, the OOM killer, a crash)
            errors[r.info.run_id] = ("its process ended without closing the run; "
                                     f"resume with: tl-train +resume={r.info.run_id}")
            client.set_tag(r.info.run_id, "tl.error_type", "ProcessDied")
            client.set_tag(r.info.run_id, "tl.error", errors[r.info.run_id])
            client.set_terminated(r.info.run_id, "KILLED")
            r.info._status = "KILLED"
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


def finish_all(stopped_by: str | None = None) -> bool:
    ok = True
    while _ACTIVE:
        parent = _ACTIVE.pop()
        try:
            ok = finish(parent, stopped_by) and ok
        except Exception:  # never mask the sweep's own error with a reporting one
            log.exception("could not finish sweep parent run %s", parent.run_id)
            ok = False
    return ok
