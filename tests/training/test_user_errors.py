"""A wrong config value or a wrong dataset is the user's to fix: `tl-train` says what is wrong
in one line, without a traceback, and exits 2; the run still ends FAILED with the message."""

from mlflow.tracking import MlflowClient

from tests.helpers.runs import base, only_run, tl_train


def test_a_bad_config_value_is_one_line_exit_2_and_a_failed_run(tmp_path, store):
    out = tl_train(*base(tmp_path, store), "trainer.epochs=0", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    message = "tl-train: error: trainer.epochs=0 must be a positive integer"
    assert out.stderr.strip().splitlines()[-1] == message
    assert out.stderr.count("tl-train: error:") == 1
    assert "Traceback" not in out.stderr + out.stdout
    run = only_run(store)
    assert run.info.status == "FAILED"
    assert run.data.tags["tl.error"] == "ConfigError: trainer.epochs=0 must be a positive integer"


def test_a_data_error_reads_as_a_message_too(tmp_path, store):
    args = base(tmp_path, store)
    data = tmp_path / "data"
    (data / "val").rename(data / "validation")
    (data / "extra").mkdir()
    out = tl_train(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("tl-train: error: the top level of") and "(extra/)" in last
    assert "Traceback" not in out.stderr
    assert only_run(store).info.status == "FAILED"


def test_hydra_full_error_still_shows_the_traceback(tmp_path, store):
    out = tl_train(*base(tmp_path, store), "trainer.epochs=0", cwd=tmp_path, full_error=True)
    assert out.returncode != 0
    assert "Traceback" in out.stderr and "ConfigError: trainer.epochs=0" in out.stderr
    assert "tl-train: error:" not in out.stderr
    assert only_run(store).info.status == "FAILED"


def test_in_a_sweep_the_job_fails_and_the_sweep_exits_1(tmp_path, store):
    # A bad config value is refused before any job starts (tests/sweeps/test_preflight.py); a
    # folder that is gone shows only when the job reads its data.
    overrides = [o for o in base(tmp_path, store) if not o.startswith("dataset.root=")]
    out = tl_train("-m", *overrides, f"dataset.root={tmp_path / 'gone'}", "trainer.epochs=1", cwd=tmp_path)
    assert out.returncode == 1, out.stderr[-2000:]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("tl").experiment_id])
    (job,) = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert job.info.status == "FAILED" and "does not exist" in job.data.tags["tl.error"]


def test_in_a_sweep_a_bad_config_value_starts_no_job_and_exits_2(tmp_path, store):
    out = tl_train("-m", *base(tmp_path, store), "trainer.epochs=0", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "trainer.epochs=0" in out.stderr and "Traceback" not in out.stderr
