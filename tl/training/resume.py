"""`tl-train +resume=RUN_ID`: continue a killed or failed run, in the same MLflow run, from
the epoch after its last checkpoint.

What trains is the run's own resolved config (its `config.yaml` artifact): the model, the
strategy's frozen parameters and BatchNorm modes, the optimizer and the schedule are rebuilt
from it, then the checkpoint's state is loaded into them. No learning rate or freezing changes
on the way; only where to log (`tracking.uri`) and `trainer.num_workers` may be given anew.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from tl.errors import ConfigError
from tl.tracking import remote, store
from tl.training import checkpoints, rungs

log = logging.getLogger(__name__)

# Keys a resume may set on the command line: they change neither the data nor the numbers.
ALLOWED = ("resume", "tracking.uri", "trainer.num_workers", "trainer.stop_after")
# A server has no lock: a resume writes a claim tag, waits this long, and goes on only if the
# tag is still its own (a rival that came later overwrote it; one that came earlier has set
# the run RUNNING by then, which the status check refuses).
CLAIM_WAIT_SECONDS = 1.0


def process_tags() -> dict[str, str]:
    """Where a run's process lives, so a resume can tell a dead RUNNING run from a live one."""
    return {"tl.host": socket.gethostname(), "tl.pid": str(os.getpid())}


def _run_id(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"resume={value!r} is not a run id: quote it, e.g. +resume=\"'RUN_ID'\" "
                          "(copy the id from the run's MLflow page or the sweep summary)")
    return value.strip()


def _check_overrides(overrides: list[str]) -> None:
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    extra = [o for o, k in zip(overrides, keys) if k not in ALLOWED]
    if extra:
        raise ConfigError(
            f"+resume continues a run with its own config, but these overrides would change it: "
            f"{' '.join(extra)}. Drop them (only {', '.join(ALLOWED[1:])} may be given), or start a new run.")


def process_gone(tags: dict[str, str]) -> bool | None:
    """Whether the process a run's tags name has ended: None when this host cannot tell (another
    host, or no process tags). A pid taken again by another process counts as alive."""
    pid = tags.get("tl.pid", "")
    if tags.get("tl.host") != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _alive(tags: dict[str, str]) -> bool:
    if tags.get("tl.pid") == str(os.getpid()) and tags.get("tl.host") == socket.gethostname():
        return False
    return process_gone(tags) is not True  # cannot tell: assume it lives


def _check_resumable(run, uri: str) -> None:
    status, rid = run.info.status, run.info.run_id
    if run.data.tags.get("tl.role") == "sweep":
        raise ConfigError(f"resume={rid} is a sweep's parent run: resume its KILLED or FAILED child runs")
    if status == "FINISHED" and rungs.stopped_at(run.data.tags) is None:
        raise ConfigError(f"resume={rid}: the run already FINISHED; there is nothing to resume")
    if status == "RUNNING" and _alive(run.data.tags):
        host, pid = run.data.tags.get("tl.host", "?"), run.data.tags.get("tl.pid", "?")
        raise ConfigError(
            f"resume={rid}: the run is RUNNING (process {pid} on {host}). Stop it first (a signal "
            "ends it as KILLED); if that process is gone for good, mark the run KILLED: "
            f"tl runs close-stale --force --tracking-uri {uri}")


def _saved_config(client, run) -> DictConfig:
    rid = run.info.run_id
    missing = ConfigError(
        f"resume={rid}: the run has no config.yaml artifact, so it stopped before training "
        f"started; run it anew: {run.data.tags.get('tl.command', '(see its tl.overrides tag)')}")
    local = checkpoints.local_dir(run.info.artifact_uri)
    if local is not None:
        if not (local / "config.yaml").is_file():
            raise missing
        cfg = OmegaConf.load(local / "config.yaml")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = client.download_artifacts(rid, "config.yaml", tmp)
            except Exception:
                raise missing from None
            cfg = OmegaConf.load(path)
    # Relative paths meant the launch directory of the first process.
    cwd = run.data.tags.get("tl.cwd")
    if cwd:
        for node, key in ((cfg.dataset, "root"), (cfg.model, "weights")):
            value = node.get(key)
            if isinstance(value, str) and value and not Path(os.path.expanduser(value)).is_absolute():
                node[key] = str(Path(cwd) / value)
    return cfg


@contextlib.contextmanager
def claimed(cfg: DictConfig):
    """One `+resume` of a run at a time. With the embedded store, a lock file beside it, held
    until the resume ends (the OS releases it when a process dies, so no lock outlives one);
    with a server, a claim tag (`reopen`)."""
    rid = _run_id(cfg.resume)
    uri = store.resolve_uri(cfg.tracking)
    path = store.sqlite_path(uri)
    if path is None:
        yield
        return
    lock = path.parent / ".locks" / f"{rid}.lock"
    with store.writable(uri):
        lock.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock, "a")  # noqa: SIM115 - held open for the whole resume
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"resume={rid}: another +resume of this run is in progress (it holds {lock}); "
                              "let it finish, or stop it and resume again") from None
        yield
    finally:
        f.close()


def _claim_on_server(client, rid: str) -> None:
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    client.set_tag(rid, "tl.resume_claim", token)
    time.sleep(CLAIM_WAIT_SECONDS)
    if client.get_run(rid).data.tags.get("tl.resume_claim") != token:
        raise ConfigError(f"resume={rid}: another +resume of this run started at the same time; "
                          "it goes on, this one stops")


def reopen(cfg: DictConfig, overrides: list[str]):
    """Check the run can resume, set it RUNNING again, and return (client, run_id, its config)."""
    rid = _run_id(cfg.resume)
    _check_overrides(overrides)
    uri = store.resolve_uri(cfg.tracking)
    client = store.prepare_store(uri)
    try:
        with remote.refusals(uri, f"reading run {rid}"):
            run = client.get_run(rid)
    except remote.ServerError:
        raise
    except Exception:
        raise ConfigError(f"resume={rid}: no such run in {uri}. Check the id, or pass "
                          "tracking.uri=... for the store the run is in") from None
    if store.sqlite_path(uri) is None and run.info.status != "FINISHED":
        _claim_on_server(client, rid)
        run = client.get_run(rid)  # as a rival that claimed first may have left it
    _check_resumable(run, uri)
    saved = _saved_config(client, run)
    try:  # before the run changes: a resume that cannot continue leaves it as it was
        checkpoints.check_resume_point(client, rid)
    except ConfigError as e:
        raise ConfigError(f"resume={rid}: {e}. The run stays {run.info.status}") from None
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    with open_dict(saved):
        saved.resume = rid
        saved.tracking.uri = cfg.tracking.get("uri")
        if "trainer.num_workers" in given:
            saved.trainer.num_workers = cfg.trainer.num_workers
        _next_rung(run, saved, cfg.trainer.get("stop_after"))
    with remote.refusals(uri, f"resuming run {rid}"):
        client.update_run(rid, status="RUNNING")
    for key in ("tl.error", "tl.error_type", rungs.STOPPED_AT, rungs.STOP_REASON):
        if key in run.data.tags:
            client.delete_tag(rid, key)
    for k, v in {**process_tags(), "tl.resumes": str(int(run.data.tags.get("tl.resumes", "0")) + 1)}.items():
        client.set_tag(rid, k, v)
    log.info("resuming run %s (%s, was %s)", rid, run.info.run_name, run.info.status)
    return client, rid, saved


def _next_rung(run, saved: DictConfig, stop) -> None:
    """A run stopped at a rung continues to the rung `stop` names, or (None) to the end; a
    killed or failed run keeps the rung it was training towards unless another is given."""
    stopped = rungs.stopped_at(run.data.tags) if run.info.status == "FINISHED" else None
    if stopped is not None:
        rungs.check_continues(run.info.run_id, stopped, saved.trainer.epochs, stop)
    if stopped is not None or stop is not None:
        saved.trainer.stop_after = stop


def check_unchanged(client, run_id: str, facts: dict) -> None:
    """A resumed run must see the data and model it started with: a changed dataset would
    silently mix two experiments in one run. Machine facts (runtime.*) may differ."""
    before = client.get_run(run_id).data.params
    changed = [f"{k}: {before[k]} -> {v}" for k, v in facts.items()
               if k in before and not k.startswith("runtime.")
               and before[k] != store.param_value(v)]
    if changed:
        raise ConfigError(f"resume={run_id}: the data or model differ from when the run started "
                          f"({'; '.join(changed[:8])}). Restore them, or start a new run.")
    moved = [f"{k}: {before[k]} -> {v}" for k, v in facts.items()
             if k in before and k.startswith("runtime.") and before[k] != store.param_value(v)]
    if moved:
        log.warning("resume=%s runs on a different setup (%s): later epochs may differ in the last "
                    "digits from an uninterrupted run", run_id, "; ".join(moved))
