"""Runs in a local store, for the tests of training, resume and sweeps: the per-epoch curves a
run logs, reading its runs back, making a run directly, and `tl-train` in its own process.
A curve reads back with `tl.tracking.readback.history`: sorted (step, value) pairs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from tests.conftest import make_image_folder
from tl.training import checkpoints

ROOT = Path(__file__).resolve().parents[2]
# Logged once per epoch by every run (README "What a run logs").
CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
BATCHES_PER_EPOCH = 4  # 16 training images (make_image_folder's default for two classes), batch size 4


def runs(store):
    """The client and the store's runs in experiment "tl", oldest first."""
    client = MlflowClient(store)
    found = client.search_runs([client.get_experiment_by_name("tl").experiment_id],
                               order_by=["attributes.start_time ASC"])
    return client, found


def only_run(store):
    """The store's one run in experiment "tl"; fails if there is not exactly one."""
    client = MlflowClient(store)
    found = client.search_runs([client.get_experiment_by_name("tl").experiment_id])
    assert len(found) == 1
    return found[0]


def make_run(store, status, tags=None, config=None):
    """A run created directly in experiment "tl" with `status` (and `config` as its config.yaml),
    as a killed, finished or running tl run leaves it; returns (client, run id)."""
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("tl")
    exp = exp.experiment_id if exp is not None else client.create_experiment("tl")
    run_id = client.create_run(exp, tags=tags or {}).info.run_id
    if config is not None:
        folder = checkpoints.local_dir(client.get_run(run_id).info.artifact_uri)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(OmegaConf.to_yaml(config, resolve=True))
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return client, run_id


def tl_train(*args, cwd, full_error=False):
    """`tl-train ARGS` in its own process, as a user runs it (HYDRA_FULL_ERROR unset unless asked)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("HYDRA_FULL_ERROR", None)
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run([sys.executable, "-m", "tl.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def base(tmp_path, store):
    """Overrides of a tiny, complete `tl-train` run (2+1 images a class) in `tmp_path`."""
    data = make_image_folder(tmp_path / "data", n_train=2, n_val=1)
    return ["dataset=imagefolder", f"dataset.root={data}", "model=resnet18", "model.pretrained=false",
            "model.input_size=32", "trainer.batch_size=2", f"tracking.uri={store}",
            f"hydra.run.dir={tmp_path / 'out'}", f"hydra.sweep.dir={tmp_path / 'multirun'}"]
