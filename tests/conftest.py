"""Shared fixtures: composed configs, tiny generated image folders, a private MLflow store,
one real sweep to read back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient
from PIL import Image

CONF = Path(__file__).resolve().parent.parent / "conf"

COLORS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 210, 40)]


def make_image_folder(root: Path, classes=("ants", "bees"), n_train=8, n_val=4, size=24,
                      layout="split", seed=0) -> Path:
    """Class folders of small, learnable images: each class its own colour, plus noise."""
    rng = np.random.default_rng(seed)
    splits = {"train": n_train, "val": n_val} if layout == "split" else {"": n_train + n_val}
    for split, n in splits.items():
        for ci, cls in enumerate(classes):
            folder = root / split / cls if split else root / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.array(COLORS[ci % len(COLORS)], dtype=np.float32)
                img = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                ext = "jpg" if i % 2 else "png"
                Image.fromarray(img).save(folder / f"{cls}_{i}.{ext}")
    return root


def compose_cfg(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Each test gets its own feature cache: no test reads another's (or the user's) cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return make_image_folder(tmp_path / "data")


@pytest.fixture
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory) -> str:
    """One store for the many small runs that need not be alone in theirs: creating a store
    takes seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"


@pytest.fixture
def fast_overrides(tiny_data, store):
    """A complete, seconds-long run on tiny data: extend with model/strategy overrides."""
    return [
        "dataset=imagefolder", f"dataset.root={tiny_data}",
        "model=resnet18", "model.pretrained=false", "model.input_size=32",
        "trainer.epochs=2", "trainer.batch_size=4", "trainer.num_workers=0",
        f"tracking.uri={store}",
    ]


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory):
    """One real two-job sweep (resnet18 x freeze, finetune) in its own store, shared by the tests
    that read runs back. They may add runs or alter a job's artifacts, never remove runs."""
    root = tmp_path_factory.mktemp("tiny_sweep")
    data = make_image_folder(root / "data")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    out = subprocess.run(
        [sys.executable, "-m", "tl.train", "-m", "model=resnet18", "strategy=freeze,finetune",
         "dataset=imagefolder", f"dataset.root={data}", "model.pretrained=false", "model.input_size=32",
         "trainer.epochs=2", "trainer.batch_size=4", "trainer.num_workers=0", f"tracking.uri={uri}",
         f"hydra.sweep.dir={root / 'multirun'}"],
        cwd=root, env={**os.environ, "HYDRA_FULL_ERROR": "0"}, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tl")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("tl.role") == "sweep"]
    jobs = {r.data.tags["tl.strategy"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    return SimpleNamespace(uri=uri, root=root, client=client, experiment_id=exp.experiment_id,
                           parent=parent, jobs=jobs)
