"""Reading a served store back over MLflow's REST API, as any client would: runs, tags, params,
metric histories and artifacts. `server` is what tests/helpers/servers.py yields (url; admin,
the login used by default, on a team server with logins)."""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request
from types import SimpleNamespace


def _request(server, endpoint: str, body: dict | None, auth, query: dict) -> bytes:
    url = server.url + endpoint + ("?" + urllib.parse.urlencode(query) if query else "")
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    login = auth or getattr(server, "admin", None)
    if login is not None:
        user, password = login
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=60) as r:
        return r.read()


def api(server, endpoint: str, body: dict | None = None, auth=None, **query):
    """The JSON answer of a REST endpoint: GET with `query`, POST with `body`; as `auth`
    (user, password) if given."""
    return json.loads(_request(server, endpoint, body, auth, query))


def fetch(server, endpoint: str, auth=None, **query) -> bytes:
    """The raw bytes an endpoint serves, e.g. a file from /get-artifact."""
    return _request(server, endpoint, None, auth, query)


def fetch_artifact(server, run_id: str, path: str) -> str:
    return fetch(server, "/get-artifact", path=path, run_uuid=run_id).decode()


def experiment(server, name: str) -> str:
    """The id of experiment `name`."""
    return api(server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=name)["experiment"]["experiment_id"]


def search(server, experiment_id: str, filter_string: str) -> list[dict]:
    return api(server, "/api/2.0/mlflow/runs/search",
               {"experiment_ids": [experiment_id], "filter": filter_string}).get("runs", [])


def sweep_runs(server, name: str):
    """The experiment's one sweep parent and its children."""
    exp_id = experiment(server, name)
    (parent,) = search(server, exp_id, "tags.`tl.role` = 'sweep'")
    kids = search(server, exp_id, f"tags.`mlflow.parentRunId` = '{parent['info']['run_id']}'")
    everything = search(server, exp_id, "")
    return SimpleNamespace(experiment_id=exp_id, parent=parent, kids=kids, all=everything)


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def params(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def metrics(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def history(server, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every logged point, sorted: as `tl.tracking.readback.history` reads a
    local store."""
    metrics = api(server, "/api/2.0/mlflow/metrics/get-history", run_id=run_id, metric_key=key)
    return sorted((m["step"], m["value"]) for m in metrics.get("metrics", []))


def artifact_files(server, run_id: str, path: str = "") -> dict[str, dict]:
    """The run's artifacts under `path`, by path, with what the server says of each (file_size...)."""
    files = api(server, "/api/2.0/mlflow/artifacts/list", run_id=run_id, path=path).get("files", [])
    return {f["path"]: f for f in files}


def listing(server, run_id: str, path: str = "") -> set[str]:
    """The paths of the run's artifacts under `path`."""
    return set(artifact_files(server, run_id, path))
