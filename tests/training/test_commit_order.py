"""An epoch commits in an order a stop cannot break: a new best staged, `last.pt` (with the
metric rows so far), the best promoted, the metrics logged. A run SIGKILLed between any two of
those writes, or failing one (an upload refused, a full staging folder), resumes to the
per-epoch metrics of an uninterrupted run, each epoch logged once, its best model kept."""

import errno
import os
import signal
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import compose_cfg, make_image_folder
from tests.helpers.faults import faulty_run, recipe
from tests.helpers.runs import CURVES, runs
from tl.errors import ConfigError
from tl.runtime.io import load_tensors
from tl.tracking import store as tl_store
from tl.tracking.readback import history
from tl.train import train
from tl.training import checkpoints

pytestmark = pytest.mark.slow  # end to end: runs killed in subprocesses, then resumed


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, in its own process, and the order of its commit writes."""
    tmp = tmp_path_factory.mktemp("reference")
    data = make_image_folder(tmp / "data")
    uri = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    out = faulty_run(tmp, recipe(data, uri))
    assert out.returncode == 0, out.stderr[-3000:]
    client, (run,) = runs(uri)
    writes = (tmp / "writes.txt").read_text().split()
    return {"client": client, "run": run, "data": data, "writes": writes}


def same_curves(client, run_id, ref):
    for key in CURVES:
        assert history(client, run_id, key) == history(ref["client"], ref["run"].info.run_id, key), key


def test_an_epoch_commits_its_checkpoint_before_its_metrics(reference):
    assert reference["writes"][:4] == ["stage_best:1", "write_last:1", "promote_best:1", "log_steps:1"]
    assert reference["writes"][-1] == "log_steps:2"


@pytest.mark.parametrize("point", ["stage_best:1", "write_last:1", "promote_best:1", "log_steps:1",
                                   "write_last:2", "log_steps:2"])
def test_a_sigkill_before_any_write_of_the_commit_resumes_to_the_uninterrupted_metrics(tmp_path, reference, point):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    out = faulty_run(tmp_path, recipe(reference["data"], uri), TL_TEST_KILL_BEFORE=point)
    assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
    assert (tmp_path / "writes.txt").read_text().split()[-1] == point
    client, (run,) = runs(uri)
    rid = run.info.run_id
    assert run.info.status == "RUNNING"  # as SIGKILL leaves it; its process is gone
    train(compose_cfg(f"+resume={rid}", f"tracking.uri={uri}"))
    resumed = client.get_run(rid)
    assert resumed.info.status == "FINISHED"
    same_curves(client, rid, reference)  # each epoch once: a repeated step would show in the history
    folder = checkpoints.local_dir(resumed.info.artifact_uri) / "checkpoints"
    assert sorted(os.listdir(folder)) == ["best.pt"]
    assert load_tensors(folder / "best.pt")["epoch"] == resumed.data.metrics["best_epoch"]
    assert resumed.data.metrics["total_seconds"] >= resumed.data.metrics["train_seconds"]


def _fail_on_second_last(monkeypatch, fail):
    """Make the second write of `last.pt` (epoch 2's commit) raise from `fail`."""
    real, seen = checkpoints.RunCheckpoints.write_last, []

    def write_last(self, payload, rows=None):
        seen.append(payload["epoch"])
        if len(seen) == 2:
            fail(self)
        return real(self, payload, rows)

    monkeypatch.setattr(checkpoints.RunCheckpoints, "write_last", write_last)


def test_a_refused_checkpoint_upload_fails_the_run_without_its_epoch_and_the_resume_is_exact(
        tmp_path, reference, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setattr(checkpoints, "local_dir", lambda artifact_uri: None)  # upload, as to a server
    real_upload = MlflowClient.log_artifact

    def refusing(self, run_id, local_path, artifact_path=None):
        if Path(local_path).name == "last.pt" and checkpoints.read(Path(local_path))["epoch"] == 2:
            raise ConnectionError("connection reset by peer")
        return real_upload(self, run_id, local_path, artifact_path)

    monkeypatch.setattr(MlflowClient, "log_artifact", refusing)
    with pytest.raises(ConnectionError):
        train(compose_cfg(*recipe(reference["data"], uri)))
    client, (run,) = runs(uri)
    assert run.info.status == "FAILED"
    assert [s for s, _ in history(client, run.info.run_id, "val_acc")] == [1], "epoch 2 never committed"
    monkeypatch.setattr(MlflowClient, "log_artifact", real_upload)
    train(compose_cfg(f"+resume={run.info.run_id}", f"tracking.uri={uri}"))
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    same_curves(client, run.info.run_id, reference)


def test_a_full_staging_folder_is_one_clear_error_and_the_resume_is_exact(tmp_path, reference, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"

    def full(ckpts):
        raise OSError(errno.ENOSPC, "No space left on device", str(ckpts.dir / "last.pt"))

    _fail_on_second_last(monkeypatch, full)
    with pytest.raises(tl_store.StoreError, match=r"cannot be written \(No space left on device: .*last.pt\)"):
        train(compose_cfg(*recipe(reference["data"], uri)))
    client, (run,) = runs(uri)
    assert run.info.status == "FAILED"
    assert [s for s, _ in history(client, run.info.run_id, "val_acc")] == [1]
    monkeypatch.undo()
    train(compose_cfg(f"+resume={run.info.run_id}", f"tracking.uri={uri}"))
    same_curves(client, run.info.run_id, reference)


def test_metric_rows_the_store_lacks_are_logged_once_from_the_checkpoint(tmp_path, shared_store):
    client = MlflowClient(shared_store)
    rid = client.create_run(client.create_experiment(f"rows-{tmp_path.name}")).info.run_id
    rows = [(1, 1000, {"val_acc": 0.5, "lr": 0.1}), (2, 2000, {"val_acc": 0.75, "lr": 0.01})]
    tl_store.log_steps(client, rid, rows[:1])
    assert checkpoints.relog_missing(client, rid, rows) == 1
    assert checkpoints.relog_missing(client, rid, rows) == 0
    assert history(client, rid, "val_acc") == [(1, 0.5), (2, 0.75)]


def test_a_killed_run_counts_the_seconds_of_every_process_it_ran_in(tmp_path, reference, monkeypatch):
    """`total_seconds` of a resumed run sums its processes: `last.pt` carries the first's."""
    from tests.helpers.callbacks import sigterm_after
    from tl.runtime import cost, signals
    from tl.training import engine, loop

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    # Each train() call stands for a fresh process, whose cost starts when it is called.
    monkeypatch.setattr(cost, "process_start", lambda: __import__("time").perf_counter())
    slow_epoch = engine.train_one_epoch

    def slow(*args, **kwargs):  # the first process spends 5 s more before its epoch 1 trains
        __import__("time").sleep(5)
        return slow_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", slow)
    with sigterm_after(4 + 2), pytest.raises(signals.Interrupted):  # 4 batches an epoch: stop in epoch 2
        train(compose_cfg(*recipe(reference["data"], uri)))
    monkeypatch.setattr(loop, "train_one_epoch", slow_epoch)
    client, (run,) = runs(uri)
    saved = checkpoints.read(checkpoints.local_dir(run.info.artifact_uri) / "checkpoints" / "last.pt")
    assert saved["total_seconds"] >= 5
    train(compose_cfg(f"+resume={run.info.run_id}", f"tracking.uri={uri}"))
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["total_seconds"] >= 5  # the first process's share, which no epoch timed
    assert metrics["total_seconds"] >= metrics["train_seconds"]
    assert metrics["total_seconds"] >= saved["total_seconds"]


def test_a_corrupt_resume_point_is_refused_and_the_run_stays_killed(tmp_path, reference):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    out = faulty_run(tmp_path, recipe(reference["data"], uri), TL_TEST_KILL_BEFORE="write_last:2")
    assert out.returncode == -signal.SIGKILL
    client, (run,) = runs(uri)
    rid = run.info.run_id
    client.set_terminated(rid, "KILLED")
    last = checkpoints.local_dir(run.info.artifact_uri) / "checkpoints" / "last.pt"
    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 2])
    with pytest.raises(ConfigError, match=rf"resume={rid}: checkpoint .*last.pt' cannot be loaded.*"
                                          r"The run stays KILLED"):
        train(compose_cfg(f"+resume={rid}", f"tracking.uri={uri}"))
    assert client.get_run(rid).info.status == "KILLED"
    last.unlink()
    with pytest.raises(ConfigError, match=r"logged epochs 1-1 but its resume point checkpoints/last.pt is gone"
                                          r".*The run stays KILLED"):
        train(compose_cfg(f"+resume={rid}", f"tracking.uri={uri}"))
    assert [s for s, _ in history(client, rid, "val_acc")] == [1], "nothing logged twice"


@pytest.mark.parametrize("refusal, message", [
    ("list", r"its checkpoints cannot be listed \(PermissionError: 403 Forbidden\)"),
    ("download", r"its checkpoints/last.pt cannot be downloaded \(ConnectionError: 503 Service Unavailable\)"),
])
def test_a_resume_point_that_cannot_be_fetched_is_an_error_never_a_restart(tmp_path, reference, monkeypatch,
                                                                         refusal, message):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setattr(checkpoints, "local_dir", lambda artifact_uri: None)  # artifacts as on a server
    _fail_on_second_last(monkeypatch, lambda ckpts: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(RuntimeError):
        train(compose_cfg(*recipe(reference["data"], uri)))
    client, (run,) = runs(uri)
    rid = run.info.run_id
    if refusal == "list":
        monkeypatch.setattr(MlflowClient, "list_artifacts",
                            lambda self, run_id, path=None: (_ for _ in ()).throw(PermissionError("403 Forbidden")))
    else:
        real = MlflowClient.download_artifacts

        def download(self, run_id, path, dst_path=None):
            if path.startswith("checkpoints"):
                raise ConnectionError("503 Service Unavailable")
            return real(self, run_id, path, dst_path)

        monkeypatch.setattr(MlflowClient, "download_artifacts", download)
    with pytest.raises(ConfigError, match=rf"resume={rid}: {message}. The run stays FAILED"):
        train(compose_cfg(f"+resume={rid}", f"tracking.uri={uri}"))
    assert client.get_run(rid).info.status == "FAILED"
    assert [s for s, _ in history(client, rid, "val_acc")] == [1]
