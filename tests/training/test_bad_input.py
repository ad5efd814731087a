"""Bad input gets an error that says what is wrong and how to fix it, or a named skip."""

import logging

import pytest
import torch

from tests.conftest import compose_cfg, make_image_folder
from tl.data import datasets
from tl.errors import ConfigError, DataError
from tl.models import backbones
from tl.models.backbones import DataConfig
from tl.train import train

DATA = DataConfig(32, 36, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")


def splits(root, **extra):
    cfg = compose_cfg("dataset=imagefolder", f"dataset.root={root}",
                      *[f"dataset.{k}={v}" for k, v in extra.items()])
    return datasets.build_splits(cfg.dataset, DATA)


def test_unknown_torchvision_model_names_close_matches():
    cfg = compose_cfg("model=torchvision", "model.name=resnet181")
    with pytest.raises(ConfigError, match=r"resnet181.*Close matches: .*resnet18"):
        backbones.create(cfg.model)


def test_unknown_timm_model_names_close_matches():
    cfg = compose_cfg("model=timm", "model.name=convnext_nanoo")
    with pytest.raises(ConfigError, match=r"not a timm model.*convnext_nano"):
        backbones.create(cfg.model)


def test_unknown_dataset_is_refused_by_hydra_with_the_choices():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="Available options in 'dataset'"):
        compose_cfg("dataset=imagenet21k")


def test_missing_dataset_root_says_where_to_point(tmp_path):
    with pytest.raises(DataError, match="does not exist: point dataset.root"):
        splits(tmp_path / "nothing")


def test_root_without_class_folders(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="has no class folders"):
        splits(tmp_path / "flat")


def test_fewer_than_two_classes(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=("ants",))
    with pytest.raises(DataError, match="at least 2"):
        splits(root)


def test_corrupt_images_are_skipped_and_named(tmp_path, caplog):
    root = make_image_folder(tmp_path / "d")
    (root / "train" / "ants" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "train" / "bees" / "empty.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        s = splits(root)
    assert len(s.train) == 16
    assert sorted(p.name for p, _ in s.skipped) == ["broken.jpg", "empty.png"]
    assert "broken.jpg" in caplog.text and "skipping 2 unreadable" in caplog.text


def test_weights_file_that_does_not_fit_names_the_keys(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"conv1.weight": torch.zeros(1), "extra.bias": torch.zeros(2)}, path)
    cfg = compose_cfg("model=resnet18", f"model.weights={path}")
    with pytest.raises(ConfigError, match=r"does not fit the model.*conv1.weight: file \(1,\)"):
        backbones.create(cfg.model)


def test_weights_file_of_the_right_architecture_loads(tmp_path):
    import torchvision

    src = torchvision.models.resnet18()
    torch.save(src.state_dict(), tmp_path / "r18.pt")
    b = backbones.create(compose_cfg("model=resnet18", f"model.weights={tmp_path / 'r18.pt'}").model)
    assert torch.equal(b.model.conv1.weight, src.conv1.weight)


def test_hymenoptera_download_that_fails_offline_says_where_to_put_the_data(tmp_path):
    cfg = compose_cfg("dataset=hymenoptera", f"dataset.root={tmp_path / 'hymenoptera_data'}",
                      "dataset.url=http://127.0.0.1:9/hymenoptera_data.zip")
    with pytest.raises(DataError, match=r"downloading .* failed .*Offline\? .*hymenoptera_data"):
        datasets.build_splits(cfg.dataset, DATA)
    assert not (tmp_path / "hymenoptera_data").exists()


def test_cifar10_offline_says_where_to_put_the_data(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    cfg = compose_cfg("dataset=cifar10", f"dataset.root={tmp_path / 'c10'}")
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        datasets.build_splits(cfg.dataset, DATA)


@pytest.mark.parametrize("overrides,message", [
    ("trainer.epochs=0", "trainer.epochs=0 must be a positive integer"),
    ("trainer.batch_size=-1", "trainer.batch_size=-1 must be a positive integer"),
    ("optimizer.lr=0", "optimizer.lr=0 must be a number > 0"),
    ("trainer.num_workers=-2", "trainer.num_workers=-2 must be >= 0"),
    ("trainer.device=tpu", "trainer.device='tpu'"),
    ("dataset.val_fraction=1.5", "val_fraction=1.5 must be a number in (0, 1)"),
    ("dataset.val_fraction=0", "val_fraction=0 must be a number in (0, 1)"),
    ("model=resnet18 strategy=partial_freeze strategy.frozen_stages=9", "frozen_stages=9 but this model has 5 stages"),
    ("optimizer.name=adam", "optimizer.name='adam' is not one of sgd, nesterov, adamw"),
])
def test_bad_config_values_are_refused_before_the_data_is_read(shared_store, tmp_path, overrides, message):
    # The dataset root does not exist: an error about it would mean the data came first.
    cfg = compose_cfg("dataset=imagefolder", f"dataset.root={tmp_path / 'never_read'}",
                      "model.pretrained=false", "model.input_size=32", "trainer.num_workers=0",
                      f"tracking.uri={shared_store}", *overrides.split())
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train(cfg)


def test_a_single_tree_without_val_fraction_is_refused_before_scanning(tmp_path):
    from tl.training import validate

    flat = make_image_folder(tmp_path / "flat", layout="flat")
    cfg = compose_cfg("dataset=imagefolder", f"dataset.root={flat}", "dataset.val_fraction=null")
    with pytest.raises(ConfigError, match="val_fraction is null, but .* has no train/ and val/ folders"):
        validate.check(cfg)
