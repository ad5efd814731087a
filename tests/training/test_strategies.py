"""Each strategy, proven by a real optimizer step: frozen parameters and BatchNorm statistics
stay put, trainable ones move."""

import pytest
import torch

from tests.conftest import compose_cfg
from tl.errors import ConfigError
from tl.models import backbones
from tl.training import strategies
from tl.training.optim import build_optimizer


def setup(strategy: str, *extra):
    cfg = compose_cfg("model=resnet18", "model.pretrained=false", f"strategy={strategy}", *extra)
    b = backbones.attach_head(backbones.create(cfg.model), 3, cfg.model.stages)
    plan = strategies.apply(b, cfg.strategy)
    return cfg, b, plan


def one_step(cfg, b, plan):
    before = {k: v.clone() for k, v in b.model.state_dict().items()}
    opt = build_optimizer(b.model, cfg.optimizer)
    strategies.set_train_mode(b.model, plan)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    torch.nn.functional.cross_entropy(b.model(x), y).backward()
    opt.step()
    after = b.model.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_finetune_trains_every_parameter():
    cfg, b, plan = setup("finetune")
    changed = one_step(cfg, b, plan)
    assert plan.frozen == 0
    assert {n for n, _ in b.model.named_parameters()} <= changed


def test_freeze_trains_only_the_head_and_keeps_bn_statistics():
    cfg, b, plan = setup("freeze")
    changed = one_step(cfg, b, plan)
    assert changed == {"fc.weight", "fc.bias"}
    assert plan.trainable == 512 * 3 + 3


def test_partial_freeze_freezes_the_first_stages_only():
    cfg, b, plan = setup("partial_freeze", "strategy.frozen_stages=2")  # stem + layer1
    changed = one_step(cfg, b, plan)
    assert not any(k.startswith(("conv1.", "bn1.", "layer1.")) for k in changed)
    assert "layer2.0.conv1.weight" in changed and "layer2.0.bn1.running_mean" in changed
    assert "fc.weight" in changed


def test_frozen_modules_stay_in_eval_mode_during_training():
    _, b, plan = setup("partial_freeze", "strategy.frozen_stages=2")
    strategies.set_train_mode(b.model, plan)
    assert not b.model.layer1.training and not b.model.bn1.training
    assert b.model.layer2.training and b.model.fc.training


def test_bn_train_mode_lets_frozen_statistics_update():
    cfg, b, plan = setup("freeze", "strategy.bn=train")
    changed = one_step(cfg, b, plan)
    assert "bn1.running_mean" in changed and "conv1.weight" not in changed


def test_optimizer_holds_only_trainable_parameters():
    cfg, b, plan = setup("freeze")
    opt = build_optimizer(b.model, cfg.optimizer)
    held = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert held == plan.trainable


def test_frozen_stages_beyond_the_model_is_refused():
    cfg = compose_cfg("model=resnet18", "model.pretrained=false", "strategy=partial_freeze",
                      "strategy.frozen_stages=9")
    b = backbones.attach_head(backbones.create(cfg.model), 3, cfg.model.stages)
    with pytest.raises(ConfigError, match="frozen_stages=9 but this model has 5 stages"):
        strategies.apply(b, cfg.strategy)


@pytest.mark.parametrize("preset", ["alexnet", "vgg16", "efficientnet_lite0", "mobilenet_v3_small_scratch"])
def test_every_preset_has_stages_that_cover_the_backbone(preset):
    cfg = compose_cfg(f"model={preset}", "model.pretrained=false")
    b = backbones.attach_head(backbones.create(cfg.model), 3, cfg.model.get("stages"))
    staged = {n for s in b.stages for n in s}
    head = {n for n, _ in b.model.named_parameters() if n not in staged}
    assert len(b.stages) >= 4
    assert head and all(any(n.startswith(h + ".") for h in b.head) for n in head)
