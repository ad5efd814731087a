"""Sweeps through Hydra's submitit launcher (`submitit_local`: each job its own process, as a
SLURM job would be) logging to a real tracking server; and an embedded store refused for a
launcher whose jobs may run elsewhere, before anything starts."""

from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import CONF
from tests.helpers.rest import fetch_artifact, history, listing, metrics, params, sweep_runs, tags
from tests.helpers.runs import CURVES
from tests.helpers.sweeps import data_folder, job_args, kill_all, new_mark, run_tl
from tl.errors import ConfigError


@pytest.fixture(scope="module")
def submitit_sweep(mlflow_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("submitit_sweep")
    mark = new_mark()
    try:
        # submitit_local starts every job of a batch at once (submitit#1685): 2 at a time here.
        out = run_tl("-m", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1",
                     "hydra.sweeper.max_batch_size=2", "model.name=test_resnet,test_efficientnet",
                     "strategy=finetune,freeze",
                     *job_args(data_folder(work / "data"), work, mlflow_server, "submitit"), cwd=work, mark=mark)
    finally:
        kill_all(mark)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return SimpleNamespace(out=out, **sweep_runs(mlflow_server, "submitit").__dict__)


def test_every_job_is_a_finished_child_of_one_parent(submitit_sweep):
    assert submitit_sweep.parent["info"]["status"] == "FINISHED"
    assert len(submitit_sweep.kids) == 4 and len(submitit_sweep.all) == 5
    assert {(tags(k)["tl.model"], tags(k)["tl.strategy"]) for k in submitit_sweep.kids} == {
        (m, s) for m in ("test_resnet", "test_efficientnet") for s in ("finetune", "freeze")}
    assert all(k["info"]["status"] == "FINISHED" for k in submitit_sweep.kids)
    assert metrics(submitit_sweep.parent)["jobs_launched"] == 4


def test_every_metric_param_and_artifact_is_served(mlflow_server, submitit_sweep):
    for kid in submitit_sweep.kids:
        run_id = kid["info"]["run_id"]
        for key in CURVES:
            assert [s for s, _ in history(mlflow_server, run_id, key)] == [1, 2], key
        assert params(kid)["data.val_images"] == "8"
        assert {"config.yaml", "checkpoints", "diagnostics", "hydra"} <= set(listing(mlflow_server, run_id))
        assert "diagnostics/confusion_matrix.png" in listing(mlflow_server, run_id, "diagnostics")
        assert f"name: {tags(kid)['tl.strategy']}" in fetch_artifact(mlflow_server, run_id, "config.yaml")


def test_each_job_runs_with_its_cpus_per_task(submitit_sweep):
    assert {params(k)["runtime.torch_threads"] for k in submitit_sweep.kids} == {"1"}


@pytest.mark.parametrize("launcher", ["submitit_local", "ray"])
def test_an_embedded_store_with_a_remote_launcher_is_refused_before_any_job_starts(launcher, tmp_path):
    store = tmp_path / "mlruns" / "mlflow.db"
    out = run_tl("-m", f"hydra/launcher={launcher}", "model=timm", "model.name=test_resnet,test_efficientnet",
                 "dataset=imagefolder", f"dataset.root={tmp_path / 'nowhere'}", f"tracking.uri=sqlite:///{store}",
                 f"hydra.sweep.dir={tmp_path / 'multirun'}", cwd=tmp_path)
    assert out.returncode != 0
    assert f"hydra/launcher={launcher} runs each job in a process of its own" in out.stderr
    assert "tracking.uri=http://HOST:PORT" in out.stderr and "tracking.shared_filesystem=true" in out.stderr
    assert not store.exists()  # no store, so no run, not even the sweep's parent
    assert "#0 :" not in out.stdout + out.stderr  # no job was handed to the launcher


def test_an_embedded_store_said_to_be_on_a_shared_filesystem_is_let_through():
    from tl.sweeps import launchers

    cfg = compose_cfg("hydra/launcher=submitit_local", "tracking.shared_filesystem=true")
    launchers.check_store(cfg, "sqlite:///somewhere/mlflow.db")  # no error
    with pytest.raises(ConfigError, match="tracking.shared_filesystem=true"):
        launchers.check_store(compose_cfg("hydra/launcher=submitit_local"), "sqlite:///somewhere/mlflow.db")
    launchers.check_store(compose_cfg("hydra/launcher=submitit_local"), "http://127.0.0.1:5000")


def compose_cfg(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
