"""MLflow: the embedded store, experiments, runs, and what each run logs.

Everything goes through an explicit `MlflowClient` and run ids, never the fluent API's
process-global active run, so sweeps in threads or processes cannot cross their runs.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

from tl.errors import TLError
from tl.runtime import configtree
from tl.runtime.paths import project_root
from tl.tracking import links, redact, remote

log = logging.getLogger(__name__)

MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit per log_batch
MAX_PARAM_LENGTH = 6000


class StoreError(TLError):
    """The store cannot be written: a read-only folder, a full disk."""


# What SQLite and the OS say when nothing can be written; a busy database is not among them
# (it passes, and a retry helps).
_UNWRITABLE_TEXT = ("readonly database", "read-only file system", "database or disk is full", "disk is full",
                    "no space left on device", "disk i/o error", "unable to open database file")
_UNWRITABLE_ERRNO = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)


def unwritable(e: BaseException) -> str | None:
    """Why `e`, or an error it came from, means the store cannot be written; None otherwise."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _UNWRITABLE_ERRNO:
            return f"{seen.strerror}: {seen.filename}" if seen.filename else str(seen.strerror)
        text = str(seen).lower()
        for marker in _UNWRITABLE_TEXT:
            if marker in text:
                return marker
        seen = seen.__cause__ or seen.__context__
    return None


def unwritable_message(uri: str, why: str) -> str:
    path = sqlite_path(uri)
    where = str(path.parent) if path is not None else uri
    return (f"the tracking store {where} cannot be written ({why}): make that folder writable or free "
            "disk space there, or pass tracking.uri=... for another store")


@contextlib.contextmanager
def writable(uri: str):
    """A read-only store or a full disk as one clear StoreError, not a database traceback."""
    try:
        yield
    except TLError:
        raise
    except Exception as e:
        why = unwritable(e)
        if why is None:
            raise
        raise StoreError(unwritable_message(uri, why)) from None


def default_uri() -> str:
    return f"sqlite:///{project_root() / 'mlruns' / 'mlflow.db'}"


def resolve_uri(cfg) -> str:
    return cfg.uri if cfg.get("uri") else default_uri()


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def _artifact_location(uri: str) -> str | None:
    path = sqlite_path(uri)
    return (path.parent / "artifacts").as_uri() if path is not None else None


def _drop_unwritable(record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return error is None or unwritable(error) is None


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    # MLflow logs a database error with its traceback before raising it; a store that cannot
    # be written is reported once, as one line (`writable`, `tl.training.lifecycle.end`).
    db_log = logging.getLogger("mlflow.store.db.utils")
    if _drop_unwritable not in db_log.filters:
        db_log.addFilter(_drop_unwritable)
    return MlflowClient(tracking_uri=uri)


def prepare_store(uri: str):
    """Create the store once, up front: concurrent first use of SQLite races (mlflow#20014).
    A server is checked instead: reachable, and accepting the login (`tl.remote`)."""
    if remote.is_remote(uri):
        remote.check_server(uri)
    path = sqlite_path(uri)
    with writable(uri):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        client = client_for(uri)
        if path is not None:
            client.search_experiments(max_results=1)  # runs the schema migrations
            with sqlite3.connect(path) as con:  # WAL lets parallel jobs write without "database is locked"
                con.execute("PRAGMA journal_mode=WAL")
    return client


def experiment_id(client, name: str, uri: str) -> str:
    with remote.refusals(uri, f"access to experiment {name!r}"):
        exp_id = _experiment_id(client, name, uri)
    if remote.is_remote(uri):  # before any run exists: a refusal must not leave one half-logged
        remote.check_can_write(uri, exp_id, name)
    return exp_id


def _experiment_id(client, name: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_location(uri))
    except Exception:  # created meanwhile by a parallel job
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The config as recorded (`redact.recorded_config`) as `a.b.c -> value` params."""
    return {k: str(v)[:MAX_PARAM_LENGTH] for k, v in configtree.flat(redact.recorded_config(cfg)).items()}


def text(value) -> str:
    """A string the store accepts: bytes of file names that are not UTF-8 (which Python
    carries as lone surrogates) come out backslash-escaped, e.g. `caf\\xe9`."""
    s = str(value)
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name produces
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def param_value(value) -> str:
    return text(value)[:MAX_PARAM_LENGTH]


def log_params(client, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    items = [Param(text(k), param_value(v)) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i:i + MAX_PARAMS_PER_BATCH])


def log_metrics(client, run_id: str, metrics: dict[str, float], step: int) -> None:
    log_steps(client, run_id, [(step, now_ms(), metrics)])


def now_ms() -> int:
    import time

    return int(time.time() * 1000)


def log_steps(client, run_id: str, steps: list[tuple[int, int, dict[str, float]]]) -> None:
    """Metrics of several steps, each (step, timestamp in ms, {key: value}), in as few writes
    as the store takes."""
    from mlflow.entities import Metric

    items = [Metric(k, float(v), ts, step) for step, ts, metrics in steps for k, v in metrics.items()]
    for i in range(0, len(items), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=items[i:i + MAX_METRICS_PER_BATCH])


@functools.cache  # the code this process runs does not change under it; each call is 2 git processes
def git_commit() -> str:
    try:
        root = project_root()
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{sha}{'-dirty' if dirty else ''}" if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    return tuple(_package_versions().items())


def package_versions() -> dict[str, str]:
    """The versions this process imported (read once per process)."""
    return dict(_versions())


def _package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "torchvision", "timm", "hydra-core", "omegaconf", "mlflow", "tl"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def ui_hint(uri: str, exp_id: str, run_ids: list[str] | None = None) -> str:
    """How to open this store: its runs table, and the runs' val curves (tl/links.py)."""
    path = sqlite_path(uri)
    base = uri.rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"
    lines = []
    if path is not None or not uri.startswith("http"):
        lines.append(f"  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")
    lines.append(f"  runs:   {links.runs_url(base, exp_id)}")
    if run_ids:
        lines.append(f"  curves: {links.curves_url(base, [exp_id], run_ids)}")
    return redact.text("\n".join(lines))
