"""The sweep tests share one real `mlflow server` (on SQLite, 127.0.0.1) for the session."""

import pytest

from tests.helpers.servers import plain_mlflow_server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A plain tracking server (SQLite, served artifacts) that every launcher test logs to."""
    with plain_mlflow_server(tmp_path_factory.mktemp("launcher_server")) as s:
        yield s
