"""Per-stage parameter groups: each group's learning rate is the one asked for, with and
without frozen stages, and frozen parameters are in no group."""

import pytest

from tests.conftest import compose_cfg
from tl.errors import ConfigError
from tl.models import backbones
from tl.training import param_groups, phases, strategies

LR = 0.01


def built(*overrides):
    """resnet18 (5 stages + head) with the strategy applied, and its optimizer and schedule."""
    cfg = compose_cfg("model=resnet18", "model.pretrained=false", f"optimizer.lr={LR}",
                      "scheduler=cosine", "trainer.epochs=4", *overrides)
    b = backbones.attach_head(backbones.create(cfg.model), 3, cfg.model.stages)
    phase = phases.schedule(cfg)[0]
    strategies.apply(b, phase.cfg.strategy)
    opt, sched = param_groups.optimizer_and_schedule(b.model, b, phase)
    return b, opt, sched


def group_lrs(opt):
    return {g["name"]: g["lr"] for g in opt.param_groups}


def ids(params):
    return {id(p) for p in params}


def test_without_per_stage_scaling_there_is_one_group_of_every_trainable_parameter():
    b, opt, _ = built("strategy=partial_freeze", "strategy.frozen_stages=2")
    (group,) = opt.param_groups
    assert ids(group["params"]) == ids(p for p in b.model.parameters() if p.requires_grad)
    assert group["lr"] == LR and param_groups.lrs(opt) == {"all": LR}


def test_the_one_group_of_a_head_only_run_is_named_head():
    _, opt, _ = built("strategy=freeze", "strategy.feature_cache.enabled=false")
    assert param_groups.lrs(opt) == {"head": LR}


def test_layer_decay_scales_each_stage_down_from_the_head():
    b, opt, sched = built("strategy=finetune", "optimizer.layer_decay=0.5")
    assert len(b.stages) == 5
    expected = {"head": LR, **{f"stage{i}": LR * 0.5 ** (5 - i) for i in range(5)}}
    assert group_lrs(opt) == pytest.approx(expected)
    assert param_groups.lrs(opt) == pytest.approx(expected), "the schedule starts from the asked LRs"


def test_layer_decay_counts_trainable_stages_only_when_stages_are_frozen():
    b, opt, _ = built("strategy=partial_freeze", "strategy.frozen_stages=2", "optimizer.layer_decay=0.5")
    # m counts the trainable groups (stage2, stage3, stage4, head): stage2 is 3 steps below the head, not 5.
    assert group_lrs(opt) == pytest.approx(
        {"stage2": LR * 0.125, "stage3": LR * 0.25, "stage4": LR * 0.5, "head": LR})
    frozen = ids(p for p in b.model.parameters() if not p.requires_grad)
    grouped = [p for g in opt.param_groups for p in g["params"]]
    assert frozen and not frozen & ids(grouped)
    assert len(grouped) == len(ids(grouped)) == sum(p.requires_grad for p in b.model.parameters())


def test_layer_decay_with_only_the_head_training_leaves_its_lr_alone():
    _, opt, _ = built("strategy=freeze", "strategy.feature_cache.enabled=false", "optimizer.layer_decay=0.5")
    assert group_lrs(opt) == {"head": LR}


def test_a_number_lr_mult_spans_the_trainable_stages_geometrically_up_to_the_head():
    cfg = compose_cfg("model=resnet18", "model.pretrained=false", f"optimizer.lr={LR}", "trainer.epochs=4",
                      "strategy=gradual_unfreeze")
    b = backbones.attach_head(backbones.create(cfg.model), 3, cfg.model.stages)
    phase = phases.schedule(cfg)[1]  # unfrozen: lr_scale 0.5, lr_mult 0.01
    strategies.apply(b, phase.cfg.strategy)
    opt, _ = param_groups.optimizer_and_schedule(b.model, b, phase)
    head = LR * 0.5
    assert group_lrs(opt) == pytest.approx({f"stage{i}": head * 0.01 ** ((5 - i) / 5) for i in range(5)} | {"head": head})


def test_a_list_lr_mult_gives_each_stage_its_own_factor():
    _, opt, _ = built("strategy=partial_freeze", "strategy.frozen_stages=3",
                      "+strategy.lr_mult=[9,9,9,0.1,0.5,1]")
    assert group_lrs(opt) == pytest.approx({"stage3": LR * 0.1, "stage4": LR * 0.5, "head": LR})


def test_a_list_lr_mult_of_the_wrong_length_is_refused():
    with pytest.raises(ConfigError, match=r"strategy.lr_mult has 2 values but this model has 5 stages and a head: give 6"):
        built("strategy=finetune", "+strategy.lr_mult=[0.1,1]")


@pytest.mark.parametrize("bad", [0, 1.5, -0.1, "'x'"])
def test_layer_decay_outside_0_1_is_refused(bad):
    with pytest.raises(ConfigError, match=r"optimizer.layer_decay=.* must be a number in \(0, 1\]"):
        built("strategy=finetune", f"optimizer.layer_decay={bad}")
