"""A run's life in the store: created with the tags that say what it is and how to rerun it,
and always ended with a true status: FINISHED, FAILED (with the error) or KILLED (with how to
resume), never left RUNNING."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf

from tl.runtime import parallel, paths, signals
from tl.sweeps import sweep
from tl.tracking import redact, store
from tl.training import resume

log = logging.getLogger("tl")
T = TypeVar("T")


def run_name(cfg: DictConfig) -> str:
    return cfg.tracking.get("run_name") or f"{cfg.model.name}-{cfg.strategy.name}-{cfg.dataset.name}"


def hydra_job() -> tuple[list[str], Path | None]:
    """The overrides and output folder of the Hydra job this process runs, if any."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return [], None
    hc = HydraConfig.get()
    # Unresolved: an override's `${oc.env:...}` is recorded as written, never as its value.
    return OmegaConf.to_container(hc.overrides.task, resolve=False), Path(hc.runtime.output_dir)


def reproduce_command(overrides: list[str]) -> str:
    return " ".join(["python -m tl.train", "hydra.mode=RUN", *(shlex.quote(o) for o in overrides)])


def create(cfg: DictConfig, overrides: list[str], extra_tags: dict[str, str] | None):
    """A new run, in its sweep's experiment (as a child of the sweep's parent) or in
    `tracking.experiment`. Returns (client, run_id, experiment id when not in a sweep)."""
    uri = store.resolve_uri(cfg.tracking)
    parent = sweep.parent_for_job(uri)
    if parent is not None:
        client, exp_id = store.client_for(uri), parent.experiment_id
    else:
        client = store.prepare_store(uri)
        exp_id = store.experiment_id(client, cfg.tracking.experiment, uri)
    tags = {
        "tl.model": str(cfg.model.name), "tl.strategy": str(cfg.strategy.name),
        "tl.dataset": str(cfg.dataset.name), "tl.overrides": " ".join(overrides),
        "tl.command": reproduce_command(overrides), "tl.git_commit": store.git_commit(),
        "tl.cwd": str(paths.launch_dir()), **resume.process_tags(),
        **{f"tl.version.{k}": v for k, v in store.package_versions().items()},
        **(extra_tags or {}),
    }
    if parent is not None:
        tags["mlflow.parentRunId"] = parent.run_id
    tags = {k: store.text(redact.text(v)) for k, v in tags.items()}
    run_id = client.create_run(exp_id, run_name=run_name(cfg), tags=tags).info.run_id
    return client, run_id, (exp_id if parent is None else None)


def to_the_end(client, run_id: str, body: Callable[[], T]) -> T:
    """Run `body` and end the run FINISHED, FAILED or (on a signal) KILLED."""
    try:
        with signals.stop_on_signals():
            result = body()
    except KeyboardInterrupt as e:
        how = f"stopped by {signals.signal_name(e)}; resume with: tl-train +resume={run_id}"
        client.set_tag(run_id, "tl.error_type", signals.signal_name(e))
        client.set_tag(run_id, "tl.error", how)
        client.set_terminated(run_id, "KILLED")
        log.warning("run %s %s", run_id, how)
        if parallel.in_sweep_worker():  # a failed job, not the end of the sweep's other jobs
            raise signals.JobKilled(f"run {run_id} {how}") from None
        raise
    except BaseException as e:
        client.set_tag(run_id, "tl.error_type", type(e).__name__)
        client.set_tag(run_id, "tl.error", redact.text(f"{type(e).__name__}: {e}")[:5000])
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return result
