"""Datasets come out as the same train/val splits every time."""

from tests.conftest import compose_cfg, make_image_folder
from tl.data import datasets, sources
from tl.models.backbones import DataConfig

DATA = DataConfig(32, 36, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")


def test_single_tree_is_split_by_val_fraction_with_a_fixed_seed(tmp_path):
    root = make_image_folder(tmp_path / "flat", n_train=8, n_val=2, layout="flat")
    cfg = compose_cfg("dataset=imagefolder", f"dataset.root={root}", "dataset.val_fraction=0.2")
    a, b = datasets.build_splits(cfg.dataset, DATA), datasets.build_splits(cfg.dataset, DATA)
    assert (len(a.train), len(a.val)) == (16, 4)
    assert a.val.samples == b.val.samples
    assert not {p for p, _ in a.train.samples} & {p for p, _ in a.val.samples}


def test_digits_are_written_once_as_an_image_folder(tmp_path):
    cfg = compose_cfg("dataset=digits", f"dataset.root={tmp_path / 'digits'}")
    s = datasets.build_splits(cfg.dataset, DATA)
    assert s.classes == [str(i) for i in range(10)]
    assert len(s.train) + len(s.val) == 1797
    x, y = s.train[0]
    assert tuple(x.shape) == (3, 32, 32) and 0 <= y < 10


def test_limit_per_class_caps_each_split(tmp_path):
    root = make_image_folder(tmp_path / "d", n_train=8, n_val=4)
    cfg = compose_cfg("dataset=imagefolder", f"dataset.root={root}", "dataset.limit_per_class=3")
    s = datasets.build_splits(cfg.dataset, DATA)
    assert (len(s.train), len(s.val)) == (6, 6)


def test_tree_digest_changes_with_content(tmp_path):
    root = make_image_folder(tmp_path / "d", n_train=1, n_val=1)
    before = sources.tree_sha256(root)
    (root / "train" / "ants" / "ants_0.png").write_bytes(b"changed")
    assert sources.tree_sha256(root) != before
