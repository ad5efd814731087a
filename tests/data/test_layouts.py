"""A folder dataset's split folders are found by name, missing splits are carved (stratified,
seeded), and a layout tl cannot read unambiguously is an error that says how to fix it."""

import json
import shutil

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import compose_cfg, make_image_folder
from tl.data import datasets, layout
from tl.errors import ConfigError, DataError
from tl.models.backbones import DataConfig
from tl.train import train
from tl.training import validate

DATA = DataConfig(32, 36, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")


def build(root, *overrides):
    cfg = compose_cfg("dataset=imagefolder", f"dataset.root={root}", *overrides)
    return datasets.build_splits(cfg.dataset, DATA)


def folders(splits):
    """split -> {folder of each image relative to root}"""
    root = splits.layout["root"]
    out = {}
    for name in ("train", "val", "test"):
        ds = getattr(splits, name)
        out[name] = None if ds is None else {str(p.parent.relative_to(root)) for p, _ in ds.samples}
    return out


def with_splits(tmp_path, names, n=6):
    """A tree whose split folders are called `names` (e.g. train, validation), each holding the
    classes ants and bees with `n` images."""
    root = tmp_path / "d"
    src = make_image_folder(tmp_path / "src", n_train=n, n_val=n)
    for name in names:
        shutil.copytree(src / "train", root / name)
    return root


def test_train_and_validation_folders_are_splits_not_classes(tmp_path):
    s = build(with_splits(tmp_path, ["train", "validation"]))
    assert s.classes == ["ants", "bees"]
    assert folders(s) == {"train": {"train/ants", "train/bees"},
                          "val": {"validation/ants", "validation/bees"}, "test": None}


@pytest.mark.parametrize("names", [["Train", "Valid", "Test"], ["training", "dev", "testing"],
                                   ["TRAIN", "Validation", "test"]])
def test_split_folders_are_recognised_in_any_case_and_spelling(tmp_path, names):
    s = build(with_splits(tmp_path, names))
    tr, va, te = names
    assert folders(s) == {"train": {f"{tr}/ants", f"{tr}/bees"}, "val": {f"{va}/ants", f"{va}/bees"},
                          "test": {f"{te}/ants", f"{te}/bees"}}
    assert s.layout["splits"]["test"]["from"] == f"{te}/"


def test_train_and_test_without_val_carve_val_from_train_and_leave_test_untouched(tmp_path):
    s = build(with_splits(tmp_path, ["train", "test"], n=10), "dataset.val_fraction=0.2", "dataset.split_seed=3")
    assert (len(s.train), len(s.val), len(s.test)) == (16, 4, 20)
    assert folders(s)["val"] == {"train/ants", "train/bees"} and folders(s)["test"] == {"test/ants", "test/bees"}
    assert sorted(y for _, y in s.val.samples) == [0, 0, 1, 1]  # stratified
    again = build(tmp_path / "d", "dataset.val_fraction=0.2", "dataset.split_seed=3")
    assert again.val.samples == s.val.samples  # seeded
    other = build(tmp_path / "d", "dataset.val_fraction=0.2", "dataset.split_seed=4")
    assert other.val.samples != s.val.samples
    assert not {p for p, _ in s.train.samples} & {p for p, _ in s.val.samples}


def test_train_alone_gets_val_carved(tmp_path):
    s = build(with_splits(tmp_path, ["train"], n=10), "dataset.val_fraction=0.3")
    assert (len(s.train), len(s.val), s.test) == (14, 6, None)
    assert s.layout["splits"]["val"]["from"] == "30% of train/ (seed 0)"


def test_a_bare_class_tree_gets_val_and_test_carved_stratified_and_seeded(tmp_path):
    root = make_image_folder(tmp_path / "flat", n_train=10, n_val=10, layout="flat")
    s = build(root, "dataset.val_fraction=0.2", "dataset.test_fraction=0.1")
    assert (len(s.train), len(s.val), len(s.test)) == (28, 8, 4)
    for ds, per_class in ((s.val, 4), (s.test, 2)):
        assert sorted(y for _, y in ds.samples) == [0] * per_class + [1] * per_class
    paths = [{p for p, _ in ds.samples} for ds in (s.train, s.val, s.test)]
    assert not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])
    # Adding a test split leaves the val split as it was.
    assert build(root, "dataset.val_fraction=0.2").val.samples == s.val.samples


def test_explicit_split_names_are_used(tmp_path):
    s = build(with_splits(tmp_path, ["train", "holdout"]), "dataset.splits.val=holdout")
    assert folders(s)["val"] == {"holdout/ants", "holdout/bees"}


def test_an_explicit_split_that_does_not_exist_names_the_key_and_the_folders(tmp_path):
    root = with_splits(tmp_path, ["train", "holdout"])
    with pytest.raises(ConfigError, match=r"dataset.splits.val='heldout': there is no folder .*holdout/"):
        build(root, "dataset.splits.val=heldout")


def test_a_top_level_mixing_splits_and_other_folders_is_an_error_naming_them(tmp_path):
    root = with_splits(tmp_path, ["train", "val"])
    shutil.copytree(root / "train" / "ants", root / "wasps")
    with pytest.raises(DataError, match=r"mixes split folders \(train/, val/\) with folders that are not "
                                        r"splits \(wasps/\).*dataset.splits.val=FOLDER"):
        build(root)


def test_a_split_name_beside_class_folders_is_an_error_too(tmp_path):
    root = make_image_folder(tmp_path / "flat", layout="flat")
    shutil.copytree(root / "ants", root / "test")
    with pytest.raises(DataError, match=r"mixes split folders \(test/\) with folders that are not "
                                        r"splits \(ants/, bees/\)"):
        build(root)


def test_two_folders_for_one_split_are_an_error(tmp_path):
    root = with_splits(tmp_path, ["train", "val", "validation"])
    with pytest.raises(DataError, match=r"2 folders that look like the val split: val/, "
                                        r"validation/.*dataset.splits.val"):
        build(root)


def test_split_folders_without_train_are_an_error(tmp_path):
    root = with_splits(tmp_path, ["val", "test"])
    with pytest.raises(DataError, match=r"no train folder.*dataset.splits.train=FOLDER"):
        build(root)


def test_a_class_folder_holding_only_folders_is_a_nesting_error(tmp_path):
    root = tmp_path / "d"
    make_image_folder(root / "train" / "animals", n_val=2)  # train/animals/{train,val}/<class>
    shutil.copytree(root / "train", root / "val")
    with pytest.raises(DataError, match=r"class folder train/animals/ .* holds only folders \(train/, val/\) "
                                        r"and no images: a nesting mistake\? set dataset.root=.*train/animals"):
        build(root)


def test_a_dataset_one_folder_too_high_says_which_root_to_use(tmp_path):
    make_image_folder(tmp_path / "outer" / "pets")
    with pytest.raises(DataError, match=r"class folder pets/ .* set dataset.root=.*outer/pets"):
        build(tmp_path / "outer")


def test_class_folders_with_images_and_subfolders_are_classes(tmp_path):
    root = make_image_folder(tmp_path / "d")
    make_image_folder(root / "train" / "ants" / "more", classes=("x",), n_train=2, n_val=0, layout="flat")
    s = build(root)
    assert s.classes == ["ants", "bees"] and len(s.train) == 18


def test_no_val_folder_and_no_val_fraction_is_refused_before_any_image_is_read(tmp_path):
    root = with_splits(tmp_path, ["train", "test"])
    cfg = compose_cfg("dataset=imagefolder", f"dataset.root={root}", "dataset.val_fraction=null")
    with pytest.raises(ConfigError, match="val_fraction is null, but .* has no train/ and val/ folders"):
        validate.check(cfg)


@pytest.mark.parametrize("override,message", [
    ("dataset.test_fraction=1.5", r"dataset.test_fraction=1.5 must be a number in \(0, 1\)"),
    ("dataset.test_fraction=0.9", r"val_fraction=0.2 \+ dataset.test_fraction=0.9 leave nothing to train on"),
])
def test_bad_test_fractions_are_refused_naming_the_key(tmp_path, override, message):
    root = make_image_folder(tmp_path / "flat", layout="flat")
    cfg = compose_cfg("dataset=imagefolder", f"dataset.root={root}", override)
    with pytest.raises(ConfigError, match=message):
        validate.check(cfg)


def test_a_class_only_in_test_is_an_error_naming_the_folder(tmp_path):
    root = with_splits(tmp_path, ["train", "val", "test"])
    (root / "test" / "bees").rename(root / "test" / "wasps")
    with pytest.raises(DataError, match=r"only in test/, not in train/: \['wasps'\]"):
        build(root)


def test_the_layout_line_names_each_split_its_folder_and_images_per_class(tmp_path):
    s = build(with_splits(tmp_path, ["train", "validation"], n=3))
    assert layout.line(s.layout) == ("layout: train=train/ 6 (ants 3, bees 3) | "
                                     "val=validation/ 6 (ants 3, bees 3) | test: none")


def test_a_run_prints_and_logs_its_layout(tmp_path, store, caplog):
    import logging

    root = with_splits(tmp_path, ["train", "Validation"], n=4)
    with caplog.at_level(logging.INFO, logger="tl"):
        train(compose_cfg("dataset=imagefolder", f"dataset.root={root}", "model=resnet18",
                          "model.pretrained=false", "model.input_size=32", "strategy=freeze",
                          "trainer.epochs=1", "trainer.batch_size=4", f"tracking.uri={store}"))
    expected = "layout: train=train/ 8 (ants 4, bees 4) | val=Validation/ 8 (ants 4, bees 4) | test: none"
    assert expected in caplog.text
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("tl").experiment_id])
    assert run.data.params["data.layout"] == expected
    assert run.data.params["data.classes"] == "ants,bees" and run.data.params["data.test_images"] == "0"
    local = client.download_artifacts(run.info.run_id, "layout.json", str(tmp_path))
    saved = json.loads(open(local, encoding="utf-8").read())
    assert saved["splits"]["val"] == {"from": "Validation/", "images": 8, "per_class": {"ants": 4, "bees": 4}}
    assert saved["splits"]["test"] is None and saved["classes"] == ["ants", "bees"]


def test_hymenoptera_reads_its_layout_the_same_way(tmp_path):
    root = with_splits(tmp_path, ["train", "val"])
    cfg = compose_cfg("dataset=hymenoptera", f"dataset.root={root}")
    s = datasets.build_splits(cfg.dataset, DATA)
    assert folders(s)["val"] == {"val/ants", "val/bees"} and s.test is None


def flat_images(folder, n=3):
    """Images directly in `folder`, no class folders: an unlabelled set (Kaggle's test/)."""
    src = make_image_folder(folder.parent / f".src_{folder.name}", classes=("x",), n_train=n, n_val=0, layout="flat")
    shutil.copytree(src / "x", folder)
    shutil.rmtree(src)


@pytest.mark.parametrize("names", [["seg_train", "seg_test"], ["training_set", "test_set"],
                                   ["train_data", "validation_data"], ["Train-Images", "Test-Images"],
                                   ["training set", "validation set"]])
def test_split_names_are_recognised_as_words_of_a_folder_name(tmp_path, names):
    s = build(with_splits(tmp_path, names))
    tr, other = names
    assert s.classes == ["ants", "bees"]
    assert folders(s)["train"] == {f"{tr}/ants", f"{tr}/bees"}
    assert {f"{other}/ants", f"{other}/bees"} in (folders(s)["val"], folders(s)["test"])


def test_the_intel_scene_layout_trains_on_seg_train_tests_on_seg_test_and_sets_seg_pred_aside(tmp_path, caplog):
    import logging

    root = with_splits(tmp_path, ["seg_train", "seg_test"])
    flat_images(root / "seg_pred")
    with caplog.at_level(logging.WARNING):
        s = build(root)
    assert s.classes == ["ants", "bees"]
    assert folders(s) == {"train": {"seg_train/ants", "seg_train/bees"}, "val": {"seg_train/ants", "seg_train/bees"},
                          "test": {"seg_test/ants", "seg_test/bees"}}
    assert s.layout["set_aside"] == ["seg_pred/"] and layout.line(s.layout).endswith("| set aside: seg_pred/")
    assert "not using seg_pred/" in caplog.text and "without class folders (unlabelled)" in caplog.text


def test_split_folders_unpacked_inside_a_folder_of_the_same_name_are_found(tmp_path):
    src = with_splits(tmp_path, ["seg_train", "seg_test"])
    root = tmp_path / "intel"
    for name in ("seg_train", "seg_test"):
        shutil.copytree(src / name, root / name / name)
    flat_images(root / "seg_pred" / "seg_pred")
    s = build(root)
    assert folders(s)["test"] == {"seg_test/seg_test/ants", "seg_test/seg_test/bees"}
    assert s.layout["set_aside"] == ["seg_pred/seg_pred/"]


def test_an_unlabelled_flat_test_folder_beside_train_is_set_aside_not_an_error(tmp_path):
    root = with_splits(tmp_path, ["train"])
    flat_images(root / "test")
    s = build(root)
    assert s.test is None and s.layout["set_aside"] == ["test/"]
    assert folders(s)["train"] == {"train/ants", "train/bees"}


def test_windows_and_text_files_in_split_folders_decide_nothing(tmp_path):
    root = with_splits(tmp_path, ["training_set", "test_set"])
    for name in ("training_set", "test_set"):
        (root / name / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
        (root / name / "desktop.ini").write_text("[.ShellClassInfo]")
        (root / name / "labels.csv").write_text("file,label\n")
    s = build(root)
    assert s.classes == ["ants", "bees"] and folders(s)["test"] == {"test_set/ants", "test_set/bees"}


def test_a_stray_file_does_not_hide_a_nesting_mistake(tmp_path):
    root = with_splits(tmp_path, ["batch_a", "batch_b"])
    for name in ("batch_a", "batch_b"):
        (root / name / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
        (root / name / "README.txt").write_text("photos")
    with pytest.raises(DataError, match=r"class folder batch_a/ .* holds only folders \(ants/, bees/\)"):
        build(root)


def test_a_class_whose_name_contains_a_split_word_stays_a_class(tmp_path):
    src = make_image_folder(tmp_path / "src", classes=("test_tube", "beaker"), n_train=5, n_val=5, layout="flat")
    s = build(src)
    assert s.classes == ["beaker", "test_tube"] and s.test is None


def test_a_folder_named_like_an_explicitly_named_split_is_set_aside(tmp_path):
    s = build(with_splits(tmp_path, ["train", "val", "validation"]), "dataset.splits.val=validation")
    assert folders(s)["val"] == {"validation/ants", "validation/bees"} and s.layout["set_aside"] == ["val/"]


def _suggested(message: str) -> list[str]:
    """The `dataset.*=VALUE` overrides an error suggests, as overrides."""
    import re

    return re.findall(r"(dataset\.(?:root|val_fraction|splits\.\w+)=[^\s,;()]+)", message)


def _nested_in_test(tmp_path):
    root = with_splits(tmp_path, ["train"])
    src = make_image_folder(tmp_path / "t", n_train=3, n_val=0)
    shutil.copytree(src / "train", root / "test" / "images")
    return root


def _one_too_high(tmp_path):
    with_splits(tmp_path, ["train", "test"])
    (tmp_path / "outer").mkdir()
    (tmp_path / "d").rename(tmp_path / "outer" / "pets")
    return tmp_path / "outer"


def _classes_one_too_deep(tmp_path):
    make_image_folder(tmp_path / "flat", layout="flat")
    (tmp_path / "outer").mkdir()
    (tmp_path / "flat").rename(tmp_path / "outer" / "photos")
    return tmp_path / "outer"


# (layout, overrides that make it fail, which suggested fix to take, what FOLDER stands for)
CASES = {
    "nested in test": (_nested_in_test, (), "dataset.splits.test=", None),
    "one folder too high": (_one_too_high, (), "dataset.root=", None),
    "classes one too deep": (_classes_one_too_deep, (), "dataset.root=", None),
    "two val folders": (lambda p: with_splits(p, ["train", "val", "validation"]), (), "dataset.splits.val=", "validation"),
    "a split with another name": (lambda p: with_splits(p, ["train", "val", "holdout"]), (), "dataset.splits.test=",
                                  "holdout"),
    "no val and no val_fraction": (lambda p: with_splits(p, ["train", "test"]), ("dataset.val_fraction=null",),
                                   "dataset.val_fraction=", None),
}


@pytest.mark.parametrize("case", CASES)
def test_an_errors_suggested_fix_works_and_never_trains_on_test(tmp_path, case):
    make, failing, prefix, folder = CASES[case]
    root = make(tmp_path)
    with pytest.raises((DataError, ConfigError)) as e:
        build(root, *failing)
    fix = next((f for f in _suggested(str(e.value)) if f.startswith(prefix)), None)
    assert fix, str(e.value)
    fix = fix.replace("=FOLDER", f"={folder}")
    if fix.startswith("dataset.root="):
        s = build(fix.split("=", 1)[1], *failing)
    else:
        s = build(root, *failing, fix)
    for ds in (s.train, s.val):  # judged from the root the user first gave
        parts = {part for p, _ in ds.samples for part in p.relative_to(root).parts[:-1]}
        assert not [part for part in parts if layout.split_of(part) == "test"], parts


def test_a_zips_macos_folder_and_a_nas_thumbnail_folder_are_neither_splits_nor_classes_nor_images(tmp_path):
    root = with_splits(tmp_path, ["train", "val", "test"])
    shutil.copytree(root / "train", root / "__MACOSX" / "train")
    for split in ("train", "val"):
        shutil.copytree(root / split / "ants", root / split / "bees" / "@eaDir")  # thumbnails of every photo
    s = build(root)
    assert s.classes == ["ants", "bees"] and not s.skipped
    assert (len(s.train), len(s.val), len(s.test)) == (12, 12, 12)
