"""Where conf/ is has one owner, `tl.runtime.paths.conf_dir()`: every entry point and the
tests compose from it, whatever the working directory."""

import shutil

from tests.conftest import CONF
from tl.runtime import paths
from tl.training import ranking


def test_the_tests_compose_from_conf_dir():
    assert CONF == paths.conf_dir()


def test_tl_rank_composes_from_conf_dir_not_the_working_directory(tmp_path, monkeypatch):
    conf = tmp_path / "elsewhere" / "conf"
    shutil.copytree(paths.conf_dir(), conf)
    shutil.copy(conf / "model" / "resnet18_scratch.yaml", conf / "model" / "only_here.yaml")
    monkeypatch.setattr(paths, "conf_dir", lambda: conf)
    monkeypatch.chdir(tmp_path)
    assert ranking.compose("only_here", []).model.name == "resnet18"
