"""Sweeps written straight into a real MLflow store with the tags, params and metrics a tl run
logs (docs/run-record.md), for tests of what reads them back: seconds instead of training."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient


@dataclass
class Job:
    model: str
    strategy: str
    best_val_acc: float
    seed: int = 42
    dataset: str = "imagefolder"
    root: str = "/data/pets"
    data_id: str | None = None  # tag tl.data_id; None: a run logged before the tag existed
    pretrained: str | None = "true"  # tag tl.pretrained; None: absent (param model.pretrained decides)
    pretrained_param: str = "True"
    test_acc: float | None = None
    train_seconds: float | None = 10.0
    total_seconds: float | None = None
    extra: dict = field(default_factory=dict)  # other swept overrides, e.g. {"optimizer.lr": "0.1"}
    status: str = "FINISHED"
    epochs: int = 3


def log_sweep(uri: str, jobs: list[Job], experiment: str = "tl", name: str = "sweep test",
              seeds_swept: bool = True):
    """A parent run tagged as a sweep with one child per job; returns (client, parent run id,
    child run ids in job order)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    parent = client.create_run(exp_id, run_name=name, tags={"tl.role": "sweep"}).info.run_id
    ids = []
    for i, j in enumerate(jobs):
        overrides = [f"model={j.model}", f"strategy={j.strategy}", f"dataset={j.dataset}",
                     f"dataset.root={j.root}", *(f"{k}={v}" for k, v in j.extra.items())]
        if seeds_swept:
            overrides.append(f"trainer.seed={j.seed}")
        tags = {"mlflow.parentRunId": parent, "tl.model": j.model, "tl.strategy": j.strategy,
                "tl.dataset": j.dataset, "tl.overrides": " ".join(overrides)}
        if j.data_id is not None:
            tags["tl.data_id"] = j.data_id
        if j.pretrained is not None:
            tags["tl.pretrained"] = j.pretrained
        run = client.create_run(exp_id, run_name=f"{j.model}-{j.strategy}-{i}", tags=tags).info.run_id
        params = {"model.name": j.model, "model.pretrained": j.pretrained_param, "dataset.name": j.dataset,
                  "dataset.root": j.root, "trainer.seed": str(j.seed), "params.trainable": "100",
                  "params.total": "1000", **j.extra}
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, e) for e in range(1, j.epochs + 1)
                   for k, v in (("val_acc", j.best_val_acc * e / j.epochs), ("val_loss", 1.0 / e))]
        summary = {"best_val_acc": j.best_val_acc, "best_epoch": j.epochs, "test_acc": j.test_acc,
                   "train_seconds": j.train_seconds, "total_seconds": j.total_seconds}
        metrics += [Metric(k, v, now, j.epochs) for k, v in summary.items() if v is not None]
        client.log_batch(run, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
        client.set_terminated(run, j.status)
        ids.append(run)
    client.set_terminated(parent, "FINISHED")
    return client, parent, ids
