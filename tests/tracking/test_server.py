"""Against a real MLflow tracking server on 127.0.0.1: a sweep logs through it, and its runs,
per-epoch histories and artifacts read back over the REST API; `tl compare` then logs its
table and figures on the sweep's parent, where the server's artifact proxy serves them."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests.conftest import make_image_folder
from tests.helpers.rest import api, artifact_files, fetch, listing, search, tags
from tests.helpers.runs import CURVES
from tests.helpers.servers import plain_mlflow_server

pytestmark = pytest.mark.slow  # end to end: whole sweeps in subprocesses

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with plain_mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as s:
        yield s


@pytest.fixture(scope="module")
def served_sweep(server):
    work = server.root / "work"
    data = make_image_folder(work / "data")
    out = subprocess.run(
        [sys.executable, "-m", "tl.train", "-m", "model=resnet18", "strategy=freeze,finetune",
         "dataset=imagefolder", f"dataset.root={data}", "model.pretrained=false", "model.input_size=32",
         "trainer.epochs=2", "trainer.batch_size=4", "trainer.num_workers=0",
         f"tracking.uri={server.url}", f"hydra.sweep.dir={work / 'multirun'}"],
        cwd=work, env={**os.environ, "HYDRA_FULL_ERROR": "0"}, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    exp_id = api(server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="tl")["experiment"]["experiment_id"]
    (parent,) = search(server, exp_id, "tags.`tl.role` = 'sweep'")
    jobs = search(server, exp_id, f"tags.`mlflow.parentRunId` = '{parent['info']['run_id']}'")
    return SimpleNamespace(experiment_id=exp_id, parent=parent, jobs=jobs)


def test_the_sweep_logs_a_parent_and_a_child_per_job_through_the_server(served_sweep):
    assert served_sweep.parent["info"]["status"] == "FINISHED"
    assert sorted(tags(j)["tl.strategy"] for j in served_sweep.jobs) == ["finetune", "freeze"]
    for job in served_sweep.jobs:
        assert job["info"]["status"] == "FINISHED"
        assert tags(job)["tl.model"] == "resnet18" and tags(job)["tl.dataset"] == "imagefolder"
        params = {p["key"]: p["value"] for p in job["data"]["params"]}
        assert params["tracking.uri"].startswith("http://127.0.0.1:")


def test_each_jobs_per_epoch_history_is_served(server, served_sweep):
    for job in served_sweep.jobs:
        for key in CURVES:
            history = api(server, "/api/2.0/mlflow/metrics/get-history",
                          run_id=job["info"]["run_id"], metric_key=key)["metrics"]
            assert sorted(m["step"] for m in history) == [1, 2], key


def test_each_jobs_artifacts_are_served(server, served_sweep):
    for job in served_sweep.jobs:
        run_id = job["info"]["run_id"]
        top = listing(server, run_id)
        assert {"config.yaml", "checkpoints", "diagnostics", "hydra"} <= set(top)
        assert "diagnostics/confusion_matrix.png" in listing(server, run_id, "diagnostics")
        config = fetch(server, "/get-artifact", path="config.yaml", run_uuid=run_id).decode()
        assert "name: resnet18" in config and f"name: {tags(job)['tl.strategy']}" in config


def test_tl_compare_logs_its_files_on_the_parent_where_the_server_serves_them(server, served_sweep, tmp_path):
    out = subprocess.run([sys.executable, "-m", "tl", "compare", "--tracking-uri", server.url, "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    parent = served_sweep.parent["info"]
    assert parent["run_id"] in out.stdout and "Best val acc, backbone x strategy" in out.stdout

    files = artifact_files(server, parent["run_id"], "compare")
    assert set(files) == {"compare/table.md", "compare/runs.csv", "compare/curves.png", "compare/matrix.png",
                          "compare/pareto.png", "compare/verdict.md"}
    assert all(f["file_size"] > 0 for f in files.values())
    table = fetch(server, "/get-artifact", path="compare/table.md", run_uuid=parent["run_id"])
    assert table == (tmp_path / "table.md").read_bytes()
    # The same file straight from the artifact proxy, where the UI's artifact view reads it.
    root = parent["artifact_uri"]
    assert root.startswith("mlflow-artifacts:/")
    png = fetch(server, f"/api/2.0/mlflow-artifacts/artifacts/{root.removeprefix('mlflow-artifacts:/').lstrip('/')}"
                        "/compare/curves.png")
    assert png == (tmp_path / "curves.png").read_bytes()
