"""Reading runs back from a store: experiments, sweeps, runs by id, metric histories.

Lookups that fail say what the store does hold, so a wrong name or id is quick to fix.
"""

from __future__ import annotations

from tl.errors import TLError
from tl.tracking import remote, store


class RunNotFound(TLError):
    pass


def open_client(uri: str):
    """A client for an existing store; never creates an empty one where a user mistyped a path."""
    path = store.sqlite_path(uri)
    if path is not None and not path.is_file():
        raise TLError(f"there is no MLflow store at {uri}: run a sweep first "
                      "(python -m tl.train -m ...) or pass --tracking-uri URI")
    if remote.is_remote(uri):  # a clear error for a server that is down or refuses the login
        remote.check_server(uri)
    return store.client_for(uri)


def find_experiment(client, name: str, uri: str):
    exp = client.get_experiment_by_name(name)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments(max_results=1000))
        raise TLError(f"no experiment {name!r} in {uri}; it has: {', '.join(names) or 'none'}. "
                      "Pass --experiment NAME")
    return exp


def get_run(client, run_id: str, uri: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RunNotFound(f"no run {run_id!r} in {uri}: copy a run id from `tl compare` or "
                              "the MLflow UI, and pass --tracking-uri if the run is in another store") from None
        raise


def find_sweep(client, experiment: str, which: str, uri: str):
    """The sweep's parent run: `latest` (the most recently started sweep in `experiment`) or a
    parent run id."""
    if which != "latest":
        run = get_run(client, which, uri)
        tags = run.data.tags
        if tags.get("tl.role") == "sweep":
            return run
        if "mlflow.parentRunId" in tags:
            raise TLError(f"run {which} is one job of a sweep: pass its parent, "
                          f"--sweep {tags['mlflow.parentRunId']}")
        raise TLError(f"run {which} is not a sweep (no tag tl.role=sweep): pass a sweep's parent "
                      "run id, or --sweep latest")
    exp = find_experiment(client, experiment, uri)
    found = client.search_runs([exp.experiment_id], filter_string="tags.`tl.role` = 'sweep'",
                               max_results=1, order_by=["attributes.start_time DESC"])
    if not found:
        raise TLError(f"experiment {experiment!r} in {uri} has no sweep yet: run one with "
                      "python -m tl.train -m model=...,... strategy=...,...")
    return found[0]


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def children(client, experiment_id: str, parent_run_id: str) -> list:
    """The runs of a sweep (children of its parent run), oldest first."""
    return client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=10000, order_by=["attributes.start_time ASC"],
    )
