"""A wrong config value or a wrong dataset is the user's to fix: `tl-train` says what is wrong
in one line, without a traceback, and exits 2; the run still ends FAILED with the message."""

import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import make_image_folder

ROOT = Path(__file__).resolve().parents[2]


def tl_train(*args, cwd, full_error=False):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("HYDRA_FULL_ERROR", None)
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run([sys.executable, "-m", "tl.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def base(tmp_path, store):
    data = make_image_folder(tmp_path / "data", n_train=2, n_val=1)
    return ["dataset=imagefolder", f"dataset.root={data}", "model=resnet18", "model.pretrained=false",
            "model.input_size=32", "trainer.batch_size=2", f"tracking.uri={store}",
            f"hydra.run.dir={tmp_path / 'out'}", f"hydra.sweep.dir={tmp_path / 'multirun'}"]


def only_run(store):
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("tl").experiment_id])
    assert len(runs) == 1
    return runs[0]


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
    out = tl_train("-m", *base(tmp_path, store), "trainer.epochs=0", cwd=tmp_path)
    assert out.returncode == 1, out.stderr[-2000:]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("tl").experiment_id])
    (job,) = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert job.info.status == "FAILED" and "trainer.epochs=0" in job.data.tags["tl.error"]
