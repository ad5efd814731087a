"""Whether a tracking URI is a store this process writes itself has one owner
(`tl.tracking.remote`): the launchers' check of an embedded store asks it."""

import pytest

from tl.tracking import remote


@pytest.mark.parametrize("uri, embedded, served", [
    ("sqlite:///tmp/mlruns/mlflow.db", True, False),
    ("file:///tmp/mlruns", True, False),
    ("/tmp/mlruns", True, False),
    ("postgresql://mlflow@db:5432/mlflow", True, False),
    ("http://host:5000", False, True),
    ("https://alice:pw@host", False, True),
    ("databricks", False, False),
    ("databricks://profile", False, False),
])
def test_only_a_store_this_process_writes_is_embedded(uri, embedded, served):
    assert (remote.is_embedded(uri), remote.is_remote(uri)) == (embedded, served)
