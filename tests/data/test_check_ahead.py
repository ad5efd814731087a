"""A run's image files checked ahead, in a forked child, while the run opens its store: the run's
own scan then finds every verdict ready and reports the same files; a child that is stuck or
no longer needed is killed and reaped, and the run checks the files itself."""

import logging
import os
import time

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from tests.conftest import compose_cfg, make_image_folder
from tl.data import ahead, datasets, imagefiles
from tl.models.backbones import DataConfig


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    monkeypatch.setattr(ahead, "_state", {})  # as in a process that has not checked ahead yet
    yield
    ahead.stop()


def damaged_jpeg(path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, quality=90)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 32] = np.random.default_rng(0).integers(0, 255, 32, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def dataset(root):
    return compose_cfg("dataset=imagefolder", f"dataset.root={root}").dataset


def build(cfg):
    return datasets.build_splits(cfg, DataConfig(16, 16, (0, 0, 0), (1, 1, 1), "bilinear"))


def gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_the_runs_scan_finds_every_verdict_ready_and_still_names_a_damaged_file(tmp_path, monkeypatch, caplog):
    root = make_image_folder(tmp_path / "d")
    damaged_jpeg(root / "train" / "bees" / "damaged.jpg")
    cfg = dataset(root)
    assert ahead.start(cfg, spare_cores=1)
    assert ahead.wait()

    def decode_again(paths):
        raise AssertionError(f"checked again: {len(paths)} files")

    monkeypatch.setattr(imagefiles, "check_images", decode_again)
    with caplog.at_level(logging.WARNING):
        s = build(cfg)
    assert {p.name: why for p, why in s.skipped}["damaged.jpg"].startswith("corrupt JPEG data (")
    assert len(s.train) == 16 and "damaged.jpg" in caplog.text


def test_the_runs_scan_waits_for_the_child_it_started(tmp_path):
    cfg = dataset(make_image_folder(tmp_path / "d"))
    assert ahead.start(cfg, spare_cores=1)
    pid = ahead._state["pid"]
    build(cfg)  # waits for the child, then reads its verdicts
    assert gone(pid) and "pid" not in ahead._state


def test_nothing_is_forked_without_a_spare_core_for_data_not_on_disk_or_twice(tmp_path):
    root = make_image_folder(tmp_path / "d")
    assert not ahead.start(dataset(root), spare_cores=0)
    assert not ahead.start(dataset(tmp_path / "missing"), spare_cores=1)
    assert not ahead.start(OmegaConf.create({"name": "cifar10", "root": str(tmp_path)}), spare_cores=1)
    assert "pid" not in ahead._state


def test_only_a_processs_first_run_checks_ahead(tmp_path):
    cfg = dataset(make_image_folder(tmp_path / "d"))
    assert ahead.start(cfg, spare_cores=1)
    ahead.wait()
    assert not ahead.start(cfg, spare_cores=1)  # a sweep's later runs find the first's verdicts


def test_a_library_call_has_no_spare_core_to_give():
    assert ahead._spare_cores() == 0  # no command marked this process's start: keep to one core


def test_a_stuck_child_is_killed_and_reaped_and_the_run_checks_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(ahead, "_check_and_exit", lambda cfg, root: (time.sleep(60), os._exit(0)))
    monkeypatch.setattr(ahead, "STALL_SECONDS", 0.3)
    cfg = dataset(make_image_folder(tmp_path / "d"))
    assert ahead.start(cfg, spare_cores=1)
    pid = ahead._state["pid"]
    started = time.monotonic()
    s = build(cfg)
    assert time.monotonic() - started < 30 and len(s.train) == 16
    assert gone(pid)


def test_a_run_that_ends_before_its_scan_leaves_no_child(tmp_path, monkeypatch):
    monkeypatch.setattr(ahead, "_check_and_exit", lambda cfg, root: (time.sleep(60), os._exit(0)))
    assert ahead.start(dataset(make_image_folder(tmp_path / "d")), spare_cores=1)
    pid = ahead._state["pid"]
    ahead.stop()
    assert gone(pid)


def test_a_parent_killed_outright_takes_its_child_with_it(tmp_path):
    import subprocess
    import sys

    root = make_image_folder(tmp_path / "d")
    script = (
        "import os, time\n"
        "from omegaconf import OmegaConf\n"
        "from tl.data import ahead\n"
        "ahead._check_and_exit = lambda cfg, root: (time.sleep(60), os._exit(0))\n"
        f"ahead.start(OmegaConf.create({{'name': 'imagefolder', 'root': {str(root)!r}}}), spare_cores=1)\n"
        "print(ahead._state['pid'], flush=True)\n"
        "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{child}"):
        with open(f"/proc/{child}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":  # a zombie, waiting for init to reap it
                break
        time.sleep(0.05)
    else:
        assert not os.path.exists(f"/proc/{child}")
