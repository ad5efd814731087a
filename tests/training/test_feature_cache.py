"""The feature cache reuses an entry only for the same data's bytes, says in each run whether
it hit and what the backbone pass cost, and cleans up after saves that were killed."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import compose_cfg
from tl.train import train
from tl.training import features

REPO = Path(__file__).resolve().parents[2]


def runs(store):
    client = MlflowClient(store)
    return client.search_runs([client.get_experiment_by_name("tl").experiment_id],
                              order_by=["attributes.start_time ASC"])


def test_a_hit_is_tagged_and_logs_the_backbone_pass_its_miss_measured(fast_overrides, store):
    cfg = compose_cfg(*fast_overrides, "strategy=freeze", "trainer.epochs=1")
    train(cfg)
    train(cfg)
    miss, hit = runs(store)
    assert (miss.data.tags["tl.feature_cache"], hit.data.tags["tl.feature_cache"]) == ("miss", "hit")
    assert miss.data.metrics["feature_pass_seconds"] > 0
    assert hit.data.metrics["feature_pass_seconds"] == miss.data.metrics["feature_pass_seconds"]


def test_a_run_that_does_not_use_the_cache_is_tagged_off_with_no_pass_seconds(fast_overrides, store):
    train(compose_cfg(*fast_overrides, "strategy=finetune", "trainer.epochs=1"))
    (run,) = runs(store)
    assert run.data.tags["tl.feature_cache"] == "off" and "feature_pass_seconds" not in run.data.metrics


def test_an_edit_that_keeps_a_files_size_and_mtime_is_a_miss(fast_overrides, tiny_data, store):
    cfg = compose_cfg(*fast_overrides, "strategy=freeze", "trainer.epochs=1")
    train(cfg)
    image = tiny_data / "val" / "bees" / "bees_0.png"
    st = image.stat()
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF  # one byte near the end: same size, other bytes
    image.write_bytes(bytes(data))
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (image.stat().st_size, image.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    train(cfg)
    assert [r.data.params["runtime.feature_cache"] for r in runs(store)] == ["miss", "miss"]


def test_a_digits_run_with_its_folder_gone_writes_it_again_before_using_the_cache(tmp_path, store):
    root = tmp_path / "digits"
    cfg = compose_cfg("dataset=digits", f"dataset.root={root}", "dataset.limit_per_class=3",
                      "model=resnet18", "model.pretrained=false", "model.input_size=32", "strategy=freeze",
                      "trainer.epochs=1", "trainer.batch_size=8", "trainer.num_workers=0", f"tracking.uri={store}")
    train(cfg)
    shutil.rmtree(root)
    train(cfg)
    first, second = runs(store)
    assert sum(1 for _ in root.rglob("*.png")) == 1797  # read again: the key is the data's, not its path's
    assert second.data.tags["tl.feature_cache"] == "hit"
    assert second.data.tags["tl.data_id"] == first.data.tags["tl.data_id"]


KILLED_SAVE = """
import os, signal, sys, torch
from pathlib import Path
from tl.training import features

def killed(obj, f):  # the process dies mid-write, as under the OOM killer
    f.write(b"\\0" * 4096)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = killed
feats = features.Features(["a", "b"], torch.zeros(1, 2, 3), torch.zeros(2), torch.zeros(2, 3), torch.zeros(2), {}, {}, {})
features.save(Path(sys.argv[1]) / "KEY.pt", feats)
"""


def test_a_save_killed_mid_write_leaves_a_temp_file_the_next_run_removes(fast_overrides, store, private_cache):
    folder = private_cache / "tl" / "features"
    folder.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(folder)], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    (left,) = folder.glob(".KEY.pt.*.tmp")
    train(compose_cfg(*fast_overrides, "strategy=freeze", "trainer.epochs=1"))
    assert not left.exists() and not list(folder.glob(".*.tmp"))


def test_a_live_writers_temp_file_is_kept_and_an_old_foreign_one_removed(tmp_path):
    live = tmp_path / f".KEY.pt.{features._writer()}.abc.tmp"
    foreign = tmp_path / ".KEY.pt.otherhost-1.abc.tmp"
    unnamed = tmp_path / ".KEY.pt.x1y2z3.tmp"  # no writer in its name
    for f in (live, foreign, unnamed):
        f.write_bytes(b"\0")
    now = time.time()
    assert features.remove_stale_temps(tmp_path, now) == []
    later = now + features.STALE_TEMP_SECONDS + 1
    os.utime(live, (later, later))  # still being written
    assert sorted(features.remove_stale_temps(tmp_path, later)) == sorted([foreign, unnamed])
    assert live.exists()


LITE0 = ["model=efficientnet_lite0", "model.pretrained=true", "strategy=freeze", "trainer.epochs=2"]  # real weights


def history(client, run_id, key="train_loss"):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_a_hit_trains_the_head_exactly_as_its_miss_did(fast_overrides, store):
    # mobilenet_v3_small has dropout 0.2 right before its classifier: the head trains with it
    cfg = compose_cfg(*fast_overrides, "model=mobilenet_v3_small_scratch", "strategy=freeze", "trainer.epochs=2")
    train(cfg)
    train(cfg)
    miss, hit = runs(store)
    assert (miss.data.tags["tl.feature_cache"], hit.data.tags["tl.feature_cache"]) == ("miss", "hit")
    client = MlflowClient(store)
    for key in ("train_loss", "val_loss"):  # the head's dropout draws the same masks after either
        assert history(client, hit.info.run_id, key) == history(client, miss.info.run_id, key)


def test_seeds_share_the_features_of_pretrained_weights_and_not_of_a_random_init(fast_overrides, store):
    for seed in (0, 1):
        train(compose_cfg(*fast_overrides, *LITE0, f"trainer.seed={seed}"))
    for seed in (0, 1):  # fast_overrides' resnet18 is from scratch: each seed its own init
        train(compose_cfg(*fast_overrides, "strategy=freeze", "trainer.epochs=1", f"trainer.seed={seed}"))
    assert [r.data.tags["tl.feature_cache"] for r in runs(store)] == ["miss", "hit", "miss", "miss"]
