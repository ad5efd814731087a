"""Which noise seeds replicate: with `dataset.resample_splits=false` (the default) every seed
trains on the same carved val/test split (`dataset.split_seed`); with `true` each seed draws its
own, and the run logs the split seed it used."""

import pytest

from tests.conftest import compose_cfg, make_image_folder
from tests.helpers.runs import runs
from tl.errors import ConfigError
from tl.train import train
from tl.training import jobs, validate


def test_resample_splits_draws_the_carved_splits_with_the_training_seed():
    cfg = compose_cfg("dataset=imagefolder", "dataset.root=x", "dataset.resample_splits=true", "trainer.seed=7")
    assert jobs.split_seeded(cfg).dataset.split_seed == 7
    assert cfg.dataset.split_seed == 0, "the logged config keeps what the user set"


def test_by_default_every_seed_shares_the_split_seed():
    cfg = compose_cfg("dataset=imagefolder", "dataset.root=x", "trainer.seed=7")
    assert cfg.dataset.resample_splits is False
    assert jobs.split_seeded(cfg).dataset.split_seed == 0


def test_resample_splits_must_be_a_boolean():
    cfg = compose_cfg("dataset=imagefolder", "dataset.root=x", "dataset.resample_splits=sometimes")
    with pytest.raises(ConfigError, match=r"dataset.resample_splits='sometimes' must be true"):
        validate.check(cfg)


def test_a_run_with_resampled_splits_logs_the_split_seed_it_drew_with(tmp_path, store):
    data = make_image_folder(tmp_path / "data", n_train=6, n_val=0, layout="flat")
    train(compose_cfg("dataset=imagefolder", f"dataset.root={data}", "dataset.val_fraction=0.5",
                      "dataset.resample_splits=true", "trainer.seed=3", "model=resnet18",
                      "model.pretrained=false", "model.input_size=32", "trainer.epochs=1",
                      "trainer.batch_size=4", "trainer.num_workers=0", f"tracking.uri={store}"))
    _, (run,) = runs(store)
    assert run.data.params["data.split_seed"] == "3"
    assert run.data.params["dataset.resample_splits"] == "True"
