"""A run's status stays true when the store or the process misbehaves: one resume of a run at
a time; a final status write that fails is retried, then said in one line; runs whose process
is gone are closed by `tl runs close-stale`; a read-only store or a full disk is one clear line."""

import os
import socket
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import compose_cfg
from tests.helpers.faults import faulty_run, recipe
from tests.helpers.runs import make_run
from tl.cli.main import main as tl_main
from tl.errors import ConfigError
from tl.tracking import store as tl_store
from tl.train import train
from tl.training import lifecycle, resume

HERE = socket.gethostname()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_resume_of_a_run_being_resumed_is_refused(tmp_path, store):
    _, run_id = make_run(store, "KILLED")
    lock = tmp_path / "mlruns" / ".locks" / f"{run_id}.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, pathlib, sys, time\n"
        f"p = pathlib.Path({str(lock)!r}); p.parent.mkdir(parents=True, exist_ok=True)\n"
        "f = open(p, 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"resume={run_id}: another \+resume of this run is in progress"):
            train(compose_cfg(f"+resume={run_id}", f"tracking.uri={store}"))
        assert MlflowClient(store).get_run(run_id).info.status == "KILLED"
    finally:
        holder.kill()
        holder.wait()
    with resume.claimed(compose_cfg(f"+resume={run_id}", f"tracking.uri={store}")):
        pass  # the dead holder's lock went with its process


def test_on_a_server_a_resume_whose_claim_was_overwritten_stops(store, monkeypatch):
    client, run_id = make_run(store, "KILLED")
    monkeypatch.setattr(resume.time, "sleep", lambda s: client.set_tag(run_id, "tl.resume_claim", "rival"))
    with pytest.raises(ConfigError, match="another \\+resume of this run started at the same time"):
        resume._claim_on_server(client, run_id)


def test_a_status_write_that_fails_twice_is_retried_and_lands(store, monkeypatch):
    client, run_id = make_run(store, "RUNNING")
    monkeypatch.setattr(lifecycle, "RETRY_DELAYS", (0, 0, 0))
    real, calls = MlflowClient.set_terminated, []

    def flaky(self, rid, status=None, end_time=None):
        calls.append(status)
        if len(calls) <= 2:
            raise ConnectionError("server restarting")
        return real(self, rid, status, end_time)

    monkeypatch.setattr(MlflowClient, "set_terminated", flaky)
    with pytest.raises(ValueError, match="boom"):
        lifecycle.to_the_end(client, run_id, lambda: (_ for _ in ()).throw(ValueError("boom")))
    assert calls == ["FAILED"] * 3
    assert client.get_run(run_id).info.status == "FAILED"


def test_a_status_write_that_keeps_failing_is_one_line_naming_the_run_and_the_fix(store, monkeypatch, capsys):
    client, run_id = make_run(store, "RUNNING")
    capsys.readouterr()  # the store's own start-up lines
    monkeypatch.setattr(lifecycle, "RETRY_DELAYS", (0, 0, 0))
    monkeypatch.setattr(MlflowClient, "set_terminated", lambda self, *a, **k: (_ for _ in ()).throw(
        RuntimeError("(sqlite3.OperationalError) database is locked\n[SQL: UPDATE runs ...]")))
    with pytest.raises(ValueError, match="boom"):  # the error that ended the run, not the store's
        lifecycle.to_the_end(client, run_id, lambda: (_ for _ in ()).throw(ValueError("boom")))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith(f"tl: error: run {run_id} could not be marked FAILED in {store}")
    assert "database is locked" in err[0] and f"tl runs close-stale --tracking-uri {store}" in err[0]


def test_close_stale_marks_runs_whose_process_is_gone_killed_and_leaves_live_ones(store, capsys):
    client, gone = make_run(store, "RUNNING", {"tl.host": HERE, "tl.pid": str(dead_pid())})
    _, alive = make_run(store, "RUNNING", {"tl.host": HERE, "tl.pid": str(os.getpid())})
    _, elsewhere = make_run(store, "RUNNING", {"tl.host": "another-node", "tl.pid": "123"})
    assert tl_main(["runs", "close-stale", "--tracking-uri", store]) == 0
    out = capsys.readouterr().out
    assert f"closed {gone}" in out and f"left   {alive}" in out and "--force closes it" in out
    closed = client.get_run(gone)
    assert closed.info.status == "KILLED" and closed.data.tags["tl.error_type"] == "stale"
    assert closed.data.tags["tl.error"].startswith("closed by tl runs close-stale: process")
    assert f"tl-train +resume={gone}" in closed.data.tags["tl.error"]
    assert client.get_run(alive).info.status == client.get_run(elsewhere).info.status == "RUNNING"


def test_close_stale_closes_runs_of_other_hosts_only_when_forced(store):
    client, elsewhere = make_run(store, "RUNNING", {"tl.host": "another-node", "tl.pid": "123"})
    _, alive = make_run(store, "RUNNING", {"tl.host": HERE, "tl.pid": str(os.getpid())})
    assert tl_main(["runs", "close-stale", "--force", "--tracking-uri", store]) == 0
    assert client.get_run(elsewhere).info.status == "KILLED"
    assert client.get_run(alive).info.status == "RUNNING", "--force never closes a live process"


def test_a_resume_refused_for_a_live_process_names_close_stale(store):
    _, run_id = make_run(store, "RUNNING", {"tl.host": "another-node", "tl.pid": "1"})
    with pytest.raises(ConfigError, match=rf"tl runs close-stale --force --tracking-uri {store}"):
        train(compose_cfg(f"+resume={run_id}", f"tracking.uri={store}"))


def test_a_read_only_store_is_one_line_exit_2_and_no_run(tmp_path, tiny_data, store):
    tl_store.prepare_store(store)  # it exists; now nothing can be written to it
    out = faulty_run(tmp_path, recipe(tiny_data, store), TL_TEST_READONLY_STORE="1")
    assert out.returncode == 2, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last == (f"tl-train: error: the tracking store {tmp_path / 'mlruns'} cannot be written (readonly "
                    "database): make that folder writable or free disk space there, or pass tracking.uri=... "
                    "for another store")
    assert "Traceback" not in out.stderr and "OperationalError" not in out.stderr
    assert MlflowClient(store).search_runs([e.experiment_id for e in MlflowClient(store).search_experiments()]) == []


def test_an_unwritable_error_is_recognised_through_the_errors_it_came_from():
    try:
        try:
            raise OSError(30, "Read-only file system", "/x/mlruns/mlflow.db")
        except OSError as inner:
            raise RuntimeError("could not write") from inner
    except RuntimeError as e:
        assert tl_store.unwritable(e) == "Read-only file system: /x/mlruns/mlflow.db"
    assert tl_store.unwritable(RuntimeError("database is locked")) is None
