"""Parallel sweeps share the cores: the jobs running at once use at most as many threads as
there are cores (n_jobs x threads <= cores), with joblib, Ray and submitit."""

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from tests.conftest import CONF, make_image_folder
from tests.helpers.sweeps import tl_env
from tl.runtime import parallel


@pytest.fixture
def as_job():
    """Make this process look like one job of a multirun with the given overrides."""
    def set_job(*overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.mode = RunMode.MULTIRUN
        HydraConfig.instance().set_config(cfg)
    yield set_job
    HydraConfig.instance().cfg = None


def test_joblib_n_jobs_counts_as_joblib_does():
    cores = parallel.cores()
    assert [parallel.workers(n) for n in (None, 1, 3, -1)] == [1, 1, 3, cores]
    assert parallel.workers(-2) == max(1, cores - 1)


def test_a_ray_job_gets_the_cpus_its_task_was_granted_and_one_by_default(as_job):
    as_job("hydra/launcher=ray", "+hydra.launcher.ray.remote.num_cpus=3")
    assert parallel.in_sweep_worker() and parallel.granted_cpus() == 3
    as_job("hydra/launcher=ray")
    assert parallel.granted_cpus() == 1  # Ray reserves one CPU per task unless told otherwise


def test_a_submitit_job_gets_its_cpus_per_task(as_job, monkeypatch):
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    as_job("hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=2")
    assert parallel.granted_cpus() == 2


def test_a_joblib_sweeps_jobs_together_use_no_more_threads_than_cores(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    env = {k: v for k, v in tl_env().items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-m", "tl.train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
         "model=timm", "model.name=test_resnet", "model.pretrained=false", "model.input_size=32",
         "dataset=imagefolder", f"dataset.root={make_image_folder(tmp_path / 'data')}", "trainer.epochs=1",
         "trainer.batch_size=4", "trainer.num_workers=0", "trainer.seed=1,2", f"tracking.uri={store}",
         f"hydra.sweep.dir={tmp_path / 'multirun'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(store)
    kids = [r for r in client.search_runs([client.get_experiment_by_name("tl").experiment_id])
            if r.data.tags.get("mlflow.parentRunId")]
    assert len(kids) == 2
    assert all(2 * int(k.data.params["runtime.torch_threads"]) <= max(2, parallel.cores()) for k in kids)
