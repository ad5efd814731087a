"""One MLflow parent run per Hydra multirun, with a child run per job.

The parent is created in `on_multirun_start`, before any job touches the store, and its id is
written to the sweep dir, where jobs in any launcher (in-process, joblib workers) find it.
Hydra skips `on_multirun_end` when a job failed (hydra#2284), so `finish_all()` also runs from
`tl.train.main`'s `finally`: the parent always ends, FAILED if any child did not finish. A
child still RUNNING then lost its process (SIGKILL, a crash): it is marked KILLED, resumable.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from tl.tracking import store

log = logging.getLogger(__name__)

PARENT_FILE = "tl_parent_run.json"


@dataclass
class Parent:
    uri: str
    experiment_id: str
    run_id: str


_ACTIVE: list[Parent] = []


def in_multirun() -> bool:
    """Whether this process runs the jobs of a Hydra multirun (`-m`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def parent_for_job() -> Parent | None:
    """The sweep's parent run, when this job is part of a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    path = Path(hc.sweep.dir) / PARENT_FILE
    if not path.is_file():
        return None
    return Parent(**json.loads(path.read_text()))


class MlflowSweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        uri = store.resolve_uri(config.tracking)
        client = store.prepare_store(uri)
        exp_id = store.experiment_id(client, config.tracking.experiment, uri)
        sweep_dir = Path(config.hydra.sweep.dir)
        overrides = list(config.hydra.overrides.task)
        run = client.create_run(
            exp_id,
            run_name=f"sweep {sweep_dir.name}",
            tags={"tl.role": "sweep", "tl.sweep_dir": str(sweep_dir.resolve()),
                  "tl.overrides": " ".join(overrides), "tl.git_commit": store.git_commit()},
        )
        parent = Parent(uri, exp_id, run.info.run_id)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_FILE).write_text(json.dumps(parent.__dict__))
        _ACTIVE.append(parent)
        log.info("sweep parent run %s in experiment %s", parent.run_id, exp_id)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        finish_all()


def children(client, parent: Parent):
    return client.search_runs(
        [parent.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.run_id}'",
        max_results=10000, order_by=["attributes.start_time ASC"],
    )


def finish(parent: Parent) -> bool:
    """End the parent run from its children's statuses; print failures and where to look.
    Returns whether every child finished."""
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
    if done:
        best = max(done, key=lambda r: r.data.metrics.get("best_val_acc", -1.0))
        client.set_tag(parent.run_id, "tl.best_run", best.info.run_name)
        client.log_metric(parent.run_id, "best_val_acc", best.data.metrics.get("best_val_acc", 0.0))
    client.log_metric(parent.run_id, "runs_finished", len(done))
    client.log_metric(parent.run_id, "runs_failed", len(failed))
    ok = bool(runs) and not failed
    client.set_terminated(parent.run_id, "FINISHED" if ok else "FAILED")

    print(f"\ntl sweep: {len(done)} of {len(runs)} runs finished (parent run {parent.run_id})")
    for r in failed:  # a KILLED run's tl.error says how to resume it
        print(f"  {r.info.status}: {r.info.run_name} (run {r.info.run_id})  "
              f"[{r.data.tags.get('tl.overrides', '')}]\n    {errors[r.info.run_id]}")
    print("Open the runs in MLflow:\n" + store.ui_hint(parent.uri, parent.experiment_id,
                                                         [r.info.run_id for r in runs]))
    return ok


def finish_all() -> bool:
    ok = True
    while _ACTIVE:
        parent = _ACTIVE.pop()
        try:
            ok = finish(parent) and ok
        except Exception:  # never mask the sweep's own error with a reporting one
            log.exception("could not finish sweep parent run %s", parent.run_id)
            ok = False
    return ok
