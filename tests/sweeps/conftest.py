"""The sweep tests share one real `mlflow server` (on SQLite, 127.0.0.1) for the session."""

from tests.sweep_support import mlflow_server  # noqa: F401 (a fixture, used by name)
