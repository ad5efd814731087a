"""Real servers for tests, on 127.0.0.1 and free ports: a plain `mlflow server` (SQLite, served
artifacts), and a team server: PostgreSQL (initdb + pg_ctl on a temporary folder, run as the
unprivileged `postgres` user, since PostgreSQL refuses to run as root) with `tl server` on it,
served artifacts and MLflow's basic-auth app.

Outside CI a machine without PostgreSQL's server binaries skips these tests with the reason; in
CI (CI=true) their absence fails them: `.ci/run` installs them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

STARTUP_SECONDS = 180  # a cold start imports all of MLflow's server: ~15 s on 2 busy cores
ADMIN = ("admin", "admin-pass-1234")
SECRET_KEY = "tests-only-csrf-key"
PG_USER = "postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<ver>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def require_postgres() -> Path:
    where = postgres_bin()
    missing = None
    if where is None:
        missing = "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql"
    elif os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            missing = f"no unprivileged {PG_USER!r} user to run PostgreSQL as: apt-get install postgresql"
    if missing is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{missing} (.ci/run installs them)")
        pytest.skip(missing)
    return where


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    if out.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out


def wait_until_healthy(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the server is not healthy after {STARTUP_SECONDS}s:\n{log_path.read_text()[-3000:]}")


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the process's group, then SIGKILL to whatever is left of it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@contextlib.contextmanager
def plain_mlflow_server(root: Path):
    """A real `mlflow server`: runs in SQLite under `root`, artifacts served from it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "server.log"
    # No GenAI job runner: it would start a pool of worker processes no test uses.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--serve-artifacts", "--artifacts-destination", str(root / "artifacts")],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(url, proc, log_path)
        yield SimpleNamespace(url=url, root=root)
    finally:
        stop_group(proc)


def start_postgres():
    """A throwaway cluster owned by the postgres user: trust logins, on loopback only.

    Its folder is a fresh one under the system temp dir, not pytest's: pytest resets its own
    base folder to 0700 whenever any session starts, which would lock the postgres user out of
    its own data mid-test."""
    bin_dir = require_postgres()
    root = Path(tempfile.mkdtemp(prefix="tl-postgres-"))
    data, sock = root / "data", root
    if os.geteuid() == 0:
        pg = pwd.getpwnam(PG_USER)
        os.chown(root, pg.pw_uid, pg.pw_gid)
    port = free_port()
    try:
        _run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust",
                           "--encoding=UTF8", "--no-sync"]))
        _run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log"), "-w",
                           "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start"]))
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    dsn = f"postgresql://mlflow@127.0.0.1:{port}"

    def stop():
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=120)
        _kill_postmaster(data / "postmaster.pid")  # whatever pg_ctl could not stop
        shutil.rmtree(root, ignore_errors=True)

    try:
        for db in ("mlflow", "mlflow_auth"):
            _run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", db])
    except BaseException:
        stop()
        raise
    return SimpleNamespace(dsn=dsn, port=port, stop=stop, bin_dir=bin_dir, root=root)


def _kill_postmaster(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """PostgreSQL + `tl server` (basic-auth, default permission NO_PERMISSIONS, served
    artifacts); yields url, admin credentials and the folders. Teardown leaves no process."""
    root = tmp_path_factory.mktemp("team_server")
    pg = start_postgres()
    proc = None
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = root / "server.log"
        env = {**os.environ, "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0], "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
               "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY,
               # No GenAI job runner: it would start a pool of worker processes these tests never use.
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            env.pop(key, None)
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tl", "server", f"port={port}", "workers=1",
                 f"backend_store_uri={pg.dsn}/mlflow", f"artifacts_destination={root / 'artifacts'}",
                 f"auth.database_uri={pg.dsn}/mlflow_auth", "auth.default_permission=NO_PERMISSIONS"],
                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until_healthy(url, proc, log_path)
        yield SimpleNamespace(url=url, root=root, admin=ADMIN, proc=proc, log=log_path, postgres=pg)
    finally:
        if proc is not None:
            stop_group(proc)
        pg.stop()
