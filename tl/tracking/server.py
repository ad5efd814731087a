"""MLflow's tracking server for a team (`tl server`), from conf/server/team.yaml: its config
loaded and checked, the auth app's ini, the command and environment, and the serving process
group started and stopped as one.

Runs on PostgreSQL (or any SQLAlchemy URI MLflow takes), serves artifacts itself
(`--artifacts-destination`, no `--default-artifact-root`: clients get `mlflow-artifacts:/` URIs
and upload and download through the server, so a job on any machine needs only the URL and a
login), and runs MLflow's basic-auth app. The auth app reads its settings from an ini file
named by MLFLOW_AUTH_CONFIG_PATH: tl writes one from the config, 0600 in a private (0700)
temporary folder removed on exit, since its `database_uri` may hold a password (MLflow reads it
from that file only). The admin's login stays in the environment (MLFLOW_AUTH_ADMIN_USERNAME /
MLFLOW_AUTH_ADMIN_PASSWORD), which MLflow reads when it creates the admin on first start, and so
does the app's CSRF signing key (MLFLOW_FLASK_SERVER_SECRET_KEY).

No secret goes on a command line, which every local user sees (`ps`): the runs' database URI
reaches `mlflow server` as MLFLOW_BACKEND_STORE_URI. A server other machines reach is refused
without logins unless `allow_insecure_open_server=true` says so.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tl.errors import ConfigError
from tl.runtime import configtree
from tl.runtime.paths import conf_dir

PERMISSIONS = ("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE")


def default_config_path() -> Path:
    return conf_dir() / "server" / "team.yaml"


def load(overrides: list[str], path: Path | None = None) -> DictConfig:
    """The config file with `key=value` overrides on top; unknown keys are refused."""
    path = path or default_config_path()
    if not path.is_file():
        raise ConfigError(f"server config {str(path)!r} does not exist: pass --config PATH")
    base = OmegaConf.load(path)
    OmegaConf.set_struct(base, True)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"{bad[0]!r} is not key=value, e.g. port=5001 or auth.default_permission=READ")
    try:
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(overrides))
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        keys = configtree.flat(OmegaConf.to_container(base))
        raise ConfigError(f"server config: {e}. Keys: {', '.join(keys)}") from None
    check(cfg)
    return cfg


def check(cfg: DictConfig) -> None:
    port = cfg.port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"port={port!r} must be a port number, 1 to 65535")
    workers = cfg.workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r} must be a positive integer")
    for key in ("backend_store_uri", "artifacts_destination", "host"):
        if not isinstance(cfg[key], str) or not cfg[key].strip():
            raise ConfigError(f"{key}={cfg[key]!r} must be set")
    if cfg.backend_store_uri.startswith(("file:", "./", "/")) or "://" not in cfg.backend_store_uri:
        raise ConfigError(f"backend_store_uri={cfg.backend_store_uri!r} must be a database URI, e.g. "
                          "postgresql://mlflow@127.0.0.1:5432/mlflow")
    if not cfg.auth.enabled and not is_loopback(cfg.host) and cfg.get("allow_insecure_open_server") is not True:
        raise ConfigError(
            f"host={cfg.host} with auth.enabled=false would let anyone who reaches port {cfg.port} read, "
            "change and delete every run and artifact, with no login: keep auth.enabled=true, or serve "
            "on loopback (host=127.0.0.1), or, on a network you trust, say so with "
            "allow_insecure_open_server=true")
    if cfg.auth.enabled:
        if cfg.auth.default_permission not in PERMISSIONS:
            raise ConfigError(f"auth.default_permission={cfg.auth.default_permission!r} must be one of "
                              f"{', '.join(PERMISSIONS)}")
        if not isinstance(cfg.auth.database_uri, str) or "://" not in cfg.auth.database_uri:
            raise ConfigError(f"auth.database_uri={cfg.auth.database_uri!r} must be a database URI, e.g. "
                              "postgresql://mlflow@127.0.0.1:5432/mlflow_auth")
        if not os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
            raise ConfigError("logins are on (auth.enabled=true) but MLFLOW_AUTH_ADMIN_PASSWORD is not set: "
                              "export MLFLOW_AUTH_ADMIN_USERNAME=admin MLFLOW_AUTH_ADMIN_PASSWORD=... "
                              "(MLflow creates that admin on the first start), or set auth.enabled=false")
        if not os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
            raise ConfigError("logins are on (auth.enabled=true) but MLFLOW_FLASK_SERVER_SECRET_KEY is not set: "
                              "the login app signs its CSRF tokens with it; export one secret string, the "
                              "same on every server of this store, e.g. "
                              "export MLFLOW_FLASK_SERVER_SECRET_KEY=$(python -c 'import secrets; print(secrets.token_hex(32))')")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(cfg: DictConfig) -> str | None:
    """`--allowed-hosts` for a server other machines reach; None on loopback (MLflow's default
    accepts localhost there). The default adds this machine's names to MLflow's own list."""
    if is_loopback(cfg.host):
        return None
    if cfg.allowed_hosts:
        return str(cfg.allowed_hosts)
    from mlflow.server.security_utils import get_default_allowed_hosts

    names = {socket.gethostname(), socket.getfqdn()}
    if cfg.host not in ("0.0.0.0", "::"):
        names.add(cfg.host)
    own = [n for name in sorted(names) for n in (name, f"{name}:{cfg.port}")]
    return ",".join(dict.fromkeys([*get_default_allowed_hosts(), *own]))


def auth_ini(cfg: DictConfig) -> str:
    """The auth app's settings. MLflow reads them with configparser's interpolation, where `%`
    starts a reference: each literal `%` (a percent-encoded password) is written `%%`."""
    admin = os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin"

    def value(v) -> str:
        return str(v).replace("%", "%%")

    return ("[mlflow]\n"
            f"default_permission = {value(cfg.auth.default_permission)}\n"
            f"database_uri = {value(cfg.auth.database_uri)}\n"
            f"admin_username = {value(admin)}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")


def write_private(folder: Path, name: str, content: str) -> Path:
    """`content` in a file only this user may read, created so from the start (no moment with
    the umask's permissions), in `folder` (which `tempfile.mkdtemp` makes 0700)."""
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(content)
    return path


def environment(cfg: DictConfig) -> dict[str, str]:
    """What `mlflow server` reads from its environment rather than its argv: the runs' URI."""
    return {"MLFLOW_BACKEND_STORE_URI": cfg.backend_store_uri}


def command(cfg: DictConfig) -> list[str]:
    artifacts = Path(os.path.expanduser(cfg.artifacts_destination)).resolve()
    # No --backend-store-uri: the URI may hold a password (see `environment`).
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--artifacts-destination", str(artifacts), "--serve-artifacts",
           "--host", cfg.host, "--port", str(cfg.port), "--workers", str(cfg.workers)]
    hosts = allowed_hosts(cfg)
    if hosts:
        cmd += ["--allowed-hosts", hosts]
    if cfg.auth.enabled:
        cmd += ["--app-name", "basic-auth"]
    return cmd


def _shown(uri: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(uri).render_as_string(hide_password=True)
    except Exception:
        return uri.split("@")[-1]


def connect_hint(cfg: DictConfig) -> str:
    host = cfg.host if cfg.host not in ("0.0.0.0", "::") else socket.getfqdn()
    url = f"http://{host}:{cfg.port}"
    lines = [f"MLflow team server on {url}",
             f"  runs:      {_shown(cfg.backend_store_uri)}",
             f"  artifacts: {Path(os.path.expanduser(cfg.artifacts_destination)).resolve()} "
             "(served: clients up- and download through the server)"]
    if cfg.auth.enabled:
        lines += [f"  logins:    on, users: {_shown(cfg.auth.database_uri)}, "
                  f"default permission {cfg.auth.default_permission}",
                  "Users connect with:",
                  "  export MLFLOW_TRACKING_USERNAME=<user> MLFLOW_TRACKING_PASSWORD=<password>",
                  f"  tl-train tracking.uri={url} ...",
                  "The admin adds users and grants (see docs/clusters-and-server.md, 'A team MLflow server'):",
                  f"  python -c \"import mlflow.server as s; c = s.get_app_client('basic-auth', '{url}'); "
                  "c.create_user('alice', '...')\""]
    else:
        lines += ["  logins:    off (auth.enabled=false): anyone who reaches the port may write",
                  f"Users connect with: tl-train tracking.uri={url} ..."]
    return "\n".join(lines)


def serve(cfg: DictConfig) -> int:
    """Run the server until it exits or this process gets SIGINT/SIGTERM, which stop the whole
    server (MLflow's CLI starts uvicorn and its workers as children: they go too)."""
    Path(os.path.expanduser(cfg.artifacts_destination)).resolve().mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **environment(cfg)}
    ini_dir = None
    if cfg.auth.enabled:
        ini_dir = tempfile.mkdtemp(prefix="tl-server-")  # 0700
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(write_private(Path(ini_dir), "basic_auth.ini", auth_ini(cfg)))
    print(connect_hint(cfg), flush=True)
    procs: list[subprocess.Popen] = []
    stopped: list[int] = []

    def stop(signum, frame):
        stopped.append(signum)
        for p in procs:
            _signal_group(p.pid, signal.SIGTERM)

    # Handlers first: a signal between the start and the handlers would orphan the server.
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc = subprocess.Popen(command(cfg), env=env, start_new_session=True)
        procs.append(proc)
        if stopped:
            _signal_group(proc.pid, signal.SIGTERM)
        code = proc.wait()
        _end_group(proc.pid)  # uvicorn's workers may outlive the CLI by a moment
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if ini_dir is not None:
            shutil.rmtree(ini_dir, ignore_errors=True)
    return 128 + stopped[0] if stopped else code


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the process group; False when none of it is left."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _end_group(pgid: int, grace: float = 20) -> None:
    """SIGTERM to what is left of the group, SIGKILL after `grace` seconds."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while _signal_group(pgid, 0):
        if time.monotonic() > deadline:
            _signal_group(pgid, signal.SIGKILL)
            return
        time.sleep(0.2)
