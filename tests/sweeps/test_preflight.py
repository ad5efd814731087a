"""A sweep checks every job's config before it starts any: a job that cannot run stops the
sweep at once, with one line per bad job and nothing created or launched."""

import subprocess
import sys

from mlflow.tracking import MlflowClient

from tests.helpers.sweeps import tl_env


def sweep(tmp_path, *args):
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    out = subprocess.run([sys.executable, "-m", "tl.train", "-m", *args, f"tracking.uri={store}",
                          f"hydra.sweep.dir={tmp_path / 'multirun'}"],
                         cwd=tmp_path, env=tl_env(), capture_output=True, text=True, timeout=600)
    return out, store


def test_a_sweep_with_jobs_whose_phases_do_not_fit_starts_no_job_and_names_each_bad_job(tmp_path):
    # Phases that ask for more epochs than a short run has are capped (tests/training/test_phases),
    # but two phases cannot fit one epoch: every job of this sweep is refused before any starts.
    out, store = sweep(tmp_path, "model=efficientnet_lite1,efficientnet_lite2",
                       "strategy=lp_ft,gradual_unfreeze", "trainer.epochs=1")
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("tl-train: error: 4 of the sweep's 4 jobs cannot run, so none was started")
    bad = [line for line in lines[1:] if line.startswith("  job #")]
    assert [line.split("]")[0] for line in bad] == [
        "  job #0 [model=efficientnet_lite1 strategy=lp_ft", "  job #1 [model=efficientnet_lite1 strategy=gradual_unfreeze",
        "  job #2 [model=efficientnet_lite2 strategy=lp_ft", "  job #3 [model=efficientnet_lite2 strategy=gradual_unfreeze"]
    assert all("strategy.phases has 2 phases of at least one epoch each, but trainer.epochs=1" in line for line in bad)
    assert "Traceback" not in out.stderr and "Error executing job" not in out.stderr
    # Nothing was created: no parent run, no job's run, no sweep folder.
    assert not (tmp_path / "multirun").exists()
    client = MlflowClient(store)
    assert all(not client.search_runs([e.experiment_id]) for e in client.search_experiments())


def test_a_sweep_naming_a_preset_that_does_not_exist_starts_no_job(tmp_path):
    out, _ = sweep(tmp_path, "model=efficientnet_lite0,no_such_preset", "trainer.epochs=1")
    assert out.returncode == 2, out.stderr[-3000:]
    assert "1 of the sweep's 2 jobs cannot run" in out.stderr
    assert "job #1 [model=no_such_preset]: In 'train': Could not find 'model/no_such_preset'" in out.stderr
    assert "Config search path" not in out.stderr and "Traceback" not in out.stderr


def test_jobs_failing_on_a_user_error_while_they_run_print_one_line_each_and_no_traceback(tmp_path):
    # A data error shows only when a job reads its data, so every job starts and fails.
    out, _ = sweep(tmp_path, "dataset=imagefolder", f"dataset.root={tmp_path / 'nowhere'}", "trainer.seed=1,2",
                   "model=resnet18", "model.pretrained=false", "trainer.epochs=1")
    assert out.returncode in (1, 2), out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    said = f"DataError: dataset folder '{tmp_path / 'nowhere'}' does not exist"
    if out.returncode == 1:  # each job ran and failed: Hydra's one line, then the sweep's line per job
        assert said in out.stderr
        assert out.stdout.count(said) == 2
