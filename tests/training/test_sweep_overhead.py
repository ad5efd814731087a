"""What a sweep's runs no longer repeat, each with what it must keep: a head on cached features
checkpoints only the head yet resumes exactly; fast epochs write together yet log every epoch;
a backbone built once per process gives each run what a fresh build would."""

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_cfg
from tests.helpers.callbacks import sigterm_after
from tests.helpers.runs import BATCHES_PER_EPOCH, CURVES, runs
from tl.errors import ConfigError
from tl.models import backbones, pristine
from tl.runtime import parallel, signals
from tl.tracking.readback import history
from tl.train import train
from tl.training import checkpoints

def checkpoint_dir(client, run_id):
    return checkpoints.local_dir(client.get_run(run_id).info.artifact_uri) / checkpoints.FOLDER


@pytest.fixture
def freeze(fast_overrides):
    # Decaying lr and momentum: state that a resume from a head-only checkpoint must carry over.
    return [*fast_overrides, "strategy=freeze", "trainer.epochs=4", "scheduler=step", "scheduler.decay_epochs=1"]


def test_a_head_on_cached_features_checkpoints_only_the_head_and_what_identifies_the_backbone(freeze, store):
    with sigterm_after(BATCHES_PER_EPOCH * 2 + 1), pytest.raises(signals.Interrupted):
        train(compose_cfg(*freeze))
    client, (run,) = runs(store)
    last = checkpoints.read(checkpoint_dir(client, run.info.run_id) / "last.pt")
    assert last["model_scope"] == "head" and last["head_module"] == "fc"
    assert set(last["model"]) == {"fc.weight", "fc.bias"}
    assert last["backbone"]["name"] == "resnet18" and last["backbone"]["feature_cache"]
    assert last["backbone"]["config"]["pretrained"] is False


def test_a_killed_run_on_cached_features_resumes_to_the_metrics_of_an_uninterrupted_one(freeze, store):
    train(compose_cfg(*freeze))  # also fills the feature cache: both runs below read it
    with sigterm_after(BATCHES_PER_EPOCH * 2 + 1), pytest.raises(signals.Interrupted):
        train(compose_cfg(*freeze))
    client, (reference, killed) = runs(store)
    assert [s for s, _ in history(client, killed.info.run_id, "val_acc")] == [1, 2]
    assert checkpoints.read(checkpoint_dir(client, killed.info.run_id) / "last.pt")["epoch"] == 2
    train(compose_cfg(f"+resume={killed.info.run_id}", f"tracking.uri={store}"))
    for key in CURVES:
        assert history(client, killed.info.run_id, key) == history(client, reference.info.run_id, key), key
    assert client.get_run(killed.info.run_id).data.metrics["best_val_acc"] == reference.data.metrics["best_val_acc"]


def test_epochs_written_together_log_every_epoch_and_the_same_best_checkpoint(freeze, store):
    train(compose_cfg(*freeze, "tracking.flush_seconds=0"))  # a write per epoch
    train(compose_cfg(*freeze, "tracking.flush_seconds=3600"))  # one write at the end
    client, (each, together) = runs(store)
    for key in (*CURVES, "epoch_seconds", "features_per_second"):
        steps = [s for s, _ in history(client, together.info.run_id, key)]
        assert steps == [1, 2, 3, 4], key
    for key in CURVES:
        assert history(client, each.info.run_id, key) == history(client, together.info.run_id, key), key
    best = [checkpoints.load_tensors(checkpoint_dir(client, r.info.run_id) / "best.pt") for r in (each, together)]
    assert best[0]["epoch"] == best[1]["epoch"]
    for k in best[0]["model"]:
        assert torch.equal(best[0]["model"][k], best[1]["model"][k]), k
    assert not (checkpoint_dir(client, together.info.run_id) / "last.pt").exists()  # finished: no resume point


def test_a_stop_while_epochs_wait_still_writes_every_finished_epoch(freeze, store):
    with sigterm_after(BATCHES_PER_EPOCH * 3 + 1), pytest.raises(signals.Interrupted):
        train(compose_cfg(*freeze, "tracking.flush_seconds=3600"))
    client, (run,) = runs(store)
    assert [s for s, _ in history(client, run.info.run_id, "train_loss")] == [1, 2, 3]
    assert checkpoints.read(checkpoint_dir(client, run.info.run_id) / "last.pt")["epoch"] == 3


def test_a_negative_flush_interval_is_refused_naming_the_key(fast_overrides):
    with pytest.raises(ConfigError, match=r"tracking.flush_seconds=-1 must be a number >= 0"):
        train(compose_cfg(*fast_overrides, "tracking.flush_seconds=-1"))


MODEL = OmegaConf.create({"source": "torchvision", "name": "resnet18", "pretrained": False, "weights": None,
                          "input_size": 32})


def test_a_reused_backbone_equals_a_fresh_build_and_leaves_the_generator_where_a_build_would():
    pristine.clear()
    torch.manual_seed(7)
    fresh = backbones.create(MODEL).model
    after_build = torch.rand(3)
    for _ in range(2):  # the first call builds and keeps, the second copies
        torch.manual_seed(7)
        reused = backbones.create(MODEL, reuse=True).model
        assert torch.equal(torch.rand(3), after_build)
        for (k, a), b in zip(fresh.state_dict().items(), reused.state_dict().values()):
            assert torch.equal(a, b), k
    pristine.clear()


def test_what_a_run_does_to_its_reused_backbone_never_reaches_the_next_run():
    pristine.clear()
    torch.manual_seed(0)
    first = backbones.create(MODEL, reuse=True)
    with torch.no_grad():
        first.model.conv1.weight.zero_()
    backbones.attach_head(first, 3)
    torch.manual_seed(0)
    second = backbones.create(MODEL, reuse=True)
    assert second.model.conv1.weight.abs().sum() > 0
    assert second.model.fc.out_features == 1000
    pristine.clear()


def test_another_seed_or_config_builds_anew():
    pristine.clear()
    torch.manual_seed(0)
    a = backbones.create(MODEL, reuse=True).model
    torch.manual_seed(1)
    b = backbones.create(MODEL, reuse=True).model
    assert not torch.equal(a.conv1.weight, b.conv1.weight)
    torch.manual_seed(0)
    c = backbones.create(OmegaConf.merge(MODEL, {"input_size": 48}), reuse=True)
    assert c.data.input_size == 48
    pristine.clear()


def test_threads_are_limited_for_the_block_and_restored_after():
    before = torch.get_num_threads()
    with parallel.intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with parallel.intra_op_threads(None):
        assert torch.get_num_threads() == before
