"""Checks against a remote MLflow server (`tracking.uri=http(s)://...`), before anything trains.

A run logging to a team server can fail three ways that are no fault of the run: the server is
unreachable, it refuses the login (HTTP 401), or the user may not write to the experiment
(HTTP 403). Each becomes one `ServerError` naming the server, the user and the fix, raised
before any data is read or model built, and before a run exists in the store, so nothing is
half-logged. Credentials are MLflow's own: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
(or MLFLOW_TRACKING_TOKEN, or ~/.mlflow/credentials), read by MLflow's client, or a login in the
URI itself (`http://alice:pw@host`, which requests sends); no message here shows its password.
"""

from __future__ import annotations

import contextlib
import re
import urllib.parse

from hydra.errors import CompactHydraException

from tl.errors import TLError
from tl.tracking import redact

# A reachability probe, not a request that may be slow: a server that cannot answer /health in
# this long will not carry a run's logging either. MLflow's own client would instead retry a
# refused connection with back-off for minutes before failing.
PROBE_TIMEOUT_S = 10

CREDENTIALS = "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to your login on that server"


class ServerError(TLError, CompactHydraException):
    """The tracking server cannot be used as configured. Hydra prints it as its message alone
    (TLError masks a password in it)."""


def is_remote(uri: str) -> bool:
    """A tracking server reached over HTTP(S), which tl probes and logs in to."""
    return urllib.parse.urlparse(str(uri)).scheme in ("http", "https")


def is_embedded(uri: str) -> bool:
    """A store this process writes itself (a file or database URI), not a server or Databricks:
    only processes that reach its file may log to it."""
    return not (is_remote(uri) or str(uri).startswith("databricks"))


def _user(uri: str | None = None) -> str | None:
    from mlflow.utils.credentials import read_mlflow_creds

    return read_mlflow_creds().username or (urllib.parse.urlsplit(uri).username if uri else None)


def _who(uri: str | None = None) -> str:
    user = _user(uri)
    return f"user {user!r}" if user else "no user (MLFLOW_TRACKING_USERNAME is not set)"


def _request(uri: str, endpoint: str, method: str = "GET", **kw):
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    return http_request(get_default_host_creds(uri), endpoint, method, max_retries=0,
                        timeout=PROBE_TIMEOUT_S, raise_on_status=False, **kw)


def refused_login(uri: str, status: int) -> ServerError:
    user = _user(uri)
    if user:
        return ServerError(f"the MLflow server at {uri} refused the login for user {user!r} (HTTP {status}): "
                           f"check the password; {CREDENTIALS}")
    return ServerError(f"the MLflow server at {uri} requires a login (HTTP {status}) and none was given: "
                       f"{CREDENTIALS}")


def denied(uri: str, what: str) -> ServerError:
    return ServerError(f"the MLflow server at {uri} denied {_who(uri)} {what} (HTTP 403): ask the server's "
                       "admin for EDIT permission on it (docs/clusters-and-server.md, 'A team MLflow server'), "
                       "or log to another experiment with tracking.experiment=NAME")


def check_server(uri: str) -> None:
    """The server answers, and accepts this login. Raises ServerError otherwise."""
    from mlflow.exceptions import MlflowException

    try:
        health = _request(uri, "/health")
    except MlflowException as e:  # connection refused, unknown host, timeout, TLS
        raise ServerError(
            f"cannot reach the MLflow server at {uri} ({_reason(e)}): check tracking.uri, that the "
            "server runs (tl server) and that this machine can reach it") from None
    if health.status_code != 200:
        raise ServerError(f"{uri} answered /health with HTTP {health.status_code}, not 200: is tracking.uri "
                          "the address of an MLflow tracking server?")
    # Any authenticated call: with basic-auth on, a wrong or missing login is refused here.
    r = _request(uri, "/api/2.0/mlflow/experiments/search", params={"max_results": 1})
    if r.status_code == 401:
        raise refused_login(uri, 401)
    if r.status_code != 200:
        raise ServerError(f"the MLflow server at {uri} answered a search with HTTP {r.status_code} "
                          f"({_first_line(r.text)}) for {_who(uri)}")


def check_can_write(uri: str, experiment_id: str, name: str) -> None:
    """The user may create runs in the experiment. The probe renames the experiment to its own
    name: the server checks the same permission as for a new run, and nothing changes."""
    r = _request(uri, "/api/2.0/mlflow/experiments/update", "POST",
                 json={"experiment_id": experiment_id, "new_name": name})
    if r.status_code == 401:
        raise refused_login(uri, 401)
    if r.status_code == 403:
        raise denied(uri, f"writing to experiment {name!r} (id {experiment_id})")
    if r.status_code != 200:
        raise ServerError(f"the MLflow server at {uri} could not check write access to experiment {name!r} "
                          f"(HTTP {r.status_code}: {_first_line(r.text)})")


@contextlib.contextmanager
def refusals(uri: str, what: str):
    """Turn the server's 401/403 answers to MLflow client calls into one clear ServerError."""
    from mlflow.exceptions import MlflowException

    if not is_remote(uri):
        yield
        return
    try:
        yield
    except MlflowException as e:
        if e.error_code == "UNAUTHENTICATED":
            raise refused_login(uri, 401) from None
        if e.error_code == "PERMISSION_DENIED":
            raise denied(uri, what) from None
        # MLflow's own messages name the request's URL, login included.
        e.message = redact.text(e.message)
        e.args = (e.message,)
        raise


def _reason(error: Exception) -> str:
    """The socket-level cause inside MLflow's and urllib3's wrapping, e.g. `connection refused`."""
    text = redact.text(error)
    errno = re.search(r"\[Errno -?\d+\] ([^\"')]+)", text)
    if errno:
        return errno.group(1).strip().lower()
    if "timed out" in text.lower():
        return f"no answer within {PROBE_TIMEOUT_S} s"
    if "ssl" in text.lower() or "certificate" in text.lower():
        return "TLS failed: " + _first_line(text)[-200:]
    return _first_line(text)


def _first_line(value) -> str:
    text = redact.text(value).strip()
    return text.splitlines()[0][:300] if text else "no message"

