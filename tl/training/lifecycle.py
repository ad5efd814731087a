"""A run's life in the store: created with the tags that say what it is and how to rerun it,
and always ended with a true status: FINISHED, FAILED (with the error) or KILLED (with how to
resume), never left RUNNING."""

from __future__ import annotations

import logging
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf

from tl.errors import TLError
from tl.runtime import parallel, paths, signals
from tl.sweeps import sweep
from tl.tracking import redact, store
from tl.training import resume

log = logging.getLogger("tl")
T = TypeVar("T")

# Waits before each retry of a run's final status write: a server restarting, SQLite busy
# beyond its own timeout, a moment of full disk.
RETRY_DELAYS = (0.5, 2.0, 5.0)


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
        with store.writable(uri):
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
    with store.writable(uri):
        run_id = client.create_run(exp_id, run_name=run_name(cfg), tags=tags).info.run_id
    return client, run_id, (exp_id if parent is None else None)


def to_the_end(client, run_id: str, body: Callable[[], T]) -> T:
    """Run `body` and end the run FINISHED, FAILED or (on a signal) KILLED."""
    try:
        with signals.stop_on_signals():
            result = body()
    except KeyboardInterrupt as e:
        how = f"stopped by {signals.signal_name(e)}; resume with: tl-train +resume={run_id}"
        end(client, run_id, "KILLED", {"tl.error_type": signals.signal_name(e), "tl.error": how})
        log.warning("run %s %s", run_id, how)
        if parallel.in_sweep_worker():  # a failed job, not the end of the sweep's other jobs
            raise signals.JobKilled(f"run {run_id} {how}") from None
        raise
    except BaseException as e:
        end(client, run_id, "FAILED", {"tl.error_type": type(e).__name__,
                                       "tl.error": redact.text(f"{type(e).__name__}: {e}")[:5000]})
        why = store.unwritable(e) if isinstance(e, Exception) and not isinstance(e, TLError) else None
        if why is not None:  # a full disk or read-only store mid-run: one line for the user
            raise store.StoreError(store.unwritable_message(redact.text(client.tracking_uri), why)) from None
        raise
    end(client, run_id, "FINISHED", {})
    return result


def end(client, run_id: str, status: str, tags: dict[str, str]) -> bool:
    """Set the run's final tags and status, retrying a store that refuses for a moment. When
    it still refuses, say so in one line (the run would show RUNNING) and return False: the
    error that ended the run, if any, is the one to raise."""
    error = None
    for delay in (0.0, *RETRY_DELAYS):
        time.sleep(delay)
        try:
            for k, v in tags.items():
                client.set_tag(run_id, k, v)
            client.set_terminated(run_id, status)
            return True
        except Exception as e:
            error = e
            log.debug("marking run %s %s failed: %s", run_id, status, e)
    first = (str(error).strip().splitlines() or [""])[0][:300]
    uri = redact.text(client.tracking_uri)
    print(f"tl: error: run {run_id} could not be marked {status} in {uri} "
          f"({type(error).__name__}: {redact.text(first)}); it shows RUNNING until closed, once the store takes writes: "
          f"tl runs close-stale --tracking-uri {uri}", file=sys.stderr, flush=True)
    return False


def close_stale(client, force: bool = False) -> tuple[list[str], list[str]]:
    """Mark KILLED the RUNNING runs whose process is gone: on this host, a `tl.pid` that no
    longer exists; elsewhere (or without process tags) only with `force`. Returns (closed,
    left), one line per run."""
    from mlflow.entities import ViewType

    exps = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    closed, left, token = [], [], None
    while exps:
        page = client.search_runs(exps, "attributes.status = 'RUNNING'", ViewType.ALL, page_token=token)
        for run in page:
            rid, tags = run.info.run_id, run.data.tags
            where = f"process {tags.get('tl.pid', '?')} on {tags.get('tl.host', '?')}"
            gone = resume.process_gone(tags)
            if gone is False or (gone is None and not force):
                left.append(f"{rid} ({run.info.run_name}): {where} "
                            f"{'still runs' if gone is False else 'cannot be checked from here: --force closes it'}")
                continue
            again = "" if tags.get("tl.role") == "sweep" else f"; resume with: tl-train +resume={rid}"
            if end(client, rid, "KILLED", {"tl.error_type": "stale",
                                           "tl.error": f"closed by tl runs close-stale: {where} is gone{again}"}):
                closed.append(f"{rid} ({run.info.run_name}): {where} is gone -> KILLED")
        token = page.token
        if not token:
            break
    return closed, left
