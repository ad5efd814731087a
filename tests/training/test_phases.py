"""Strategies in phases (lp_ft, gradual_unfreeze): each phase trains what its config says, at
its LR, from the epoch it says; every boundary rebuilds optimizer and schedule; a run killed
on either side of a boundary resumes to the metrics of an uninterrupted run."""

import pytest

from tests.conftest import compose_cfg, make_image_folder
from tests.helpers.callbacks import sigterm_after
from tests.helpers.runs import BATCHES_PER_EPOCH, CURVES, runs
from tl.errors import ConfigError
from tl.models import backbones
from tl.runtime import signals
from tl.tracking.readback import history
from tl.train import train
from tl.training import phases, validate

LR = 0.01


def lp_ft(*extra):
    return compose_cfg("strategy=lp_ft", f"optimizer.lr={LR}", *extra)


def test_lp_ft_probes_the_head_then_finetunes_everything_at_its_own_lr():
    probe, ft = phases.schedule(lp_ft("trainer.epochs=10"))
    assert (probe.name, probe.start, probe.end, probe.cfg.strategy.name) == ("probe", 1, 5, "freeze")
    assert (ft.name, ft.start, ft.end, ft.cfg.strategy.name) == ("finetune", 6, 10, "finetune")
    assert probe.cfg.optimizer.lr == LR and ft.cfg.optimizer.lr == pytest.approx(LR * 0.1)
    assert probe.cfg.strategy.feature_cache.enabled, "the probe trains on cached features"


def test_gradual_unfreeze_trains_the_head_for_freeze_epochs_then_everything():
    head, unfrozen = phases.schedule(compose_cfg("strategy=gradual_unfreeze", "strategy.freeze_epochs=2",
                                                 "trainer.epochs=6", f"optimizer.lr={LR}"))
    assert (head.end, head.cfg.strategy.name, head.cfg.optimizer.lr) == (2, "freeze", LR)
    assert (unfrozen.start, unfrozen.epochs, unfrozen.cfg.strategy.name) == (3, 4, "finetune")
    assert unfrozen.cfg.optimizer.lr == pytest.approx(LR / 2) and unfrozen.cfg.strategy.lr_mult == 0.01


def test_a_strategy_without_phases_is_one_phase_its_own_config():
    cfg = compose_cfg("strategy=partial_freeze", "trainer.epochs=3")
    (only,) = phases.schedule(cfg)
    assert only.cfg is cfg and (only.start, only.end, only.index) == (1, 3, 0)


def test_a_head_only_phase_after_the_backbone_trained_does_not_use_cached_features():
    cfg = lp_ft("trainer.epochs=3", "strategy.phases=[{epochs:1,frozen_stages:0},{epochs:2,frozen_stages:all}]")
    _, late_probe = phases.schedule(cfg)
    assert late_probe.cfg.strategy.name == "freeze" and not late_probe.cfg.strategy.feature_cache.enabled


def test_the_epoch_lands_in_the_right_phase():
    schedule = phases.schedule(lp_ft("trainer.epochs=7", "strategy.probe_epochs=3"))
    assert [phases.at(schedule, e).index for e in range(0, 8)] == [0, 0, 0, 0, 1, 1, 1, 1]


@pytest.mark.parametrize("overrides, message", [
    (["trainer.epochs=1"], r"strategy.phases has 2 phases of at least one epoch each, but trainer.epochs=1"),
    (["strategy.phases.1.epochs=2", "trainer.epochs=10"], r"strategy.phases last 7 epochs but trainer.epochs=10"),
    (["strategy.phases.0.epochs=rest"], r"strategy.phases\[0\].epochs=rest: only the last phase"),
    (["strategy.probe_epochs=0"], r"strategy.phases\[0\].epochs=0 must be a positive integer"),
    (["strategy.phases.1.frozen_stages=some"], r"strategy.phases\[1\].frozen_stages='some' must be `all`"),
    (["+strategy.phases.1.lr_decay=0.1"], r"strategy.phases\[1\] has unknown keys \['lr_decay'\]"),
    (["strategy.phases.1.lr_scale=0"], r"strategy.phases\[1\].lr_scale=0 must be a number > 0"),
    (["strategy.bn=frozen"], r"strategy.bn=frozen replaces BatchNorm layers for good"),
], ids=["no-epochs-left", "sum-mismatch", "rest-not-last", "zero-epochs", "frozen-stages", "unknown-key",
        "lr-scale", "bn-frozen"])
def test_bad_phases_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        phases.schedule(lp_ft(*overrides))


@pytest.mark.parametrize("epochs, lengths", [(4, [3, 1]), (5, [4, 1]), (2, [1, 1]), (6, [5, 1]), (9, [5, 4])])
def test_a_probe_longer_than_a_short_run_is_capped_to_leave_the_last_phase_one_epoch(epochs, lengths):
    schedule = phases.schedule(lp_ft(f"trainer.epochs={epochs}"))  # probe_epochs: 5
    assert [p.epochs for p in schedule] == lengths
    assert schedule[-1].end == epochs
    assert phases.adjusted(schedule) == ([] if lengths[0] == 5 else [f"probe {lengths[0]} of its 5 epochs"])


def test_several_capped_phases_each_keep_at_least_one_epoch():
    cfg = lp_ft("trainer.epochs=4", "strategy.phases=[{epochs:3,frozen_stages:all},{epochs:3,frozen_stages:2},"
                "{epochs:rest,frozen_stages:0}]")
    assert [p.epochs for p in phases.schedule(cfg)] == [2, 1, 1]


def test_phases_that_cannot_fit_are_refused_by_the_config_check_before_any_data_is_read(tmp_path):
    cfg = lp_ft("trainer.epochs=1", "dataset=imagefolder", f"dataset.root={tmp_path / 'absent'}")
    with pytest.raises(ConfigError, match=r"2 phases of at least one epoch each, but trainer.epochs=1: raise"):
        validate.check(cfg)


def test_frozen_stages_beyond_the_model_are_refused_naming_the_phase():
    cfg = lp_ft("strategy.phases.1.frozen_stages=9", "model=resnet18", "model.pretrained=false")
    with pytest.raises(ConfigError, match=r"strategy.phases\[1\] \(finetune\): strategy.frozen_stages=9 but this model has 5 stages"):
        validate.frozen_stages(cfg, phases.schedule(cfg), backbones.create(cfg.model))


def base(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    return store, ["dataset=imagefolder", f"dataset.root={make_image_folder(tmp_path / 'data')}",
                   "model=resnet18", "model.pretrained=false", "model.input_size=32", "trainer.batch_size=4",
                   "trainer.num_workers=0", "scheduler=step", "scheduler.decay_epochs=1",
                   f"optimizer.lr={LR}", f"tracking.uri={store}"]


def test_a_phased_run_logs_its_phase_and_each_group_lr_per_epoch(tmp_path):
    store, overrides = base(tmp_path)
    train(compose_cfg(*overrides, "strategy=gradual_unfreeze", "strategy.freeze_epochs=2", "trainer.epochs=4"))
    client, (run,) = runs(store)
    rid = run.info.run_id
    assert [v for _, v in history(client, rid, "phase")] == [0, 0, 1, 1]
    # each phase's own step schedule, restarted at the boundary: no LR the config does not say
    assert [v for _, v in history(client, rid, "lr.head")] == pytest.approx([LR, LR / 10, LR / 2, LR / 20])
    assert [v for _, v in history(client, rid, "lr")] == [v for _, v in history(client, rid, "lr.head")]
    assert [s for s, _ in history(client, rid, "lr.stage0")] == [3, 4], "stage0 trains from the unfreeze"
    assert history(client, rid, "lr.stage0")[0][1] == pytest.approx(LR / 2 * 0.01)
    assert run.data.params["runtime.feature_cache"] == "miss", "the head-only phase ran on cached features"


def test_a_short_lp_ft_run_trains_both_phases_and_logs_their_lengths(tmp_path, caplog):
    store, overrides = base(tmp_path)
    train(compose_cfg(*overrides, "strategy=lp_ft", "trainer.epochs=3"))  # probe_epochs: 5
    client, (run,) = runs(store)
    assert run.info.status == "FINISHED"
    assert run.data.params["strategy.phase_epochs"] == "probe:2,finetune:1"
    assert [v for _, v in history(client, run.info.run_id, "phase")] == [0, 0, 1]
    assert "strategy=lp_ft: phase probe 2 of its 5 epochs, to fit trainer.epochs=3" in caplog.text


def test_a_plain_run_logs_phase_0_and_its_one_group(tmp_path):
    store, overrides = base(tmp_path)
    train(compose_cfg(*overrides, "strategy=finetune", "trainer.epochs=2"))
    client, (run,) = runs(store)
    assert [v for _, v in history(client, run.info.run_id, "phase")] == [0, 0]
    assert history(client, run.info.run_id, "lr.all") == history(client, run.info.run_id, "lr")


@pytest.mark.parametrize("recipe, kill_at", [
    (["strategy=lp_ft", "strategy.probe_epochs=1"], BATCHES_PER_EPOCH + 2),  # last.pt: the probe's end
    (["strategy=gradual_unfreeze", "optimizer.layer_decay=0.7"], 2 * BATCHES_PER_EPOCH + 2),  # mid-phase 2
], ids=["killed-right-after-the-boundary", "killed-inside-the-second-phase"])
def test_resume_across_a_phase_boundary_is_exact(tmp_path, recipe, kill_at):
    store, overrides = base(tmp_path)
    overrides += ["trainer.epochs=3", *recipe]
    train(compose_cfg(*overrides))
    with sigterm_after(kill_at), pytest.raises(signals.Interrupted):
        train(compose_cfg(*overrides))
    client, (reference, run) = runs(store)
    train(compose_cfg(f"+resume={run.info.run_id}", f"tracking.uri={store}"))
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    keys = set(client.get_run(reference.info.run_id).data.metrics)
    group_keys = sorted(k for k in keys if k.startswith("lr."))
    assert len(group_keys) > 1
    for key in (*CURVES, "phase", *group_keys):
        assert history(client, run.info.run_id, key) == history(client, reference.info.run_id, key), key
