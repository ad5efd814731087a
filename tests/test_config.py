"""Every option of every config group composes into a complete config."""


import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF, compose_cfg

GROUPS = ["model", "strategy", "dataset", "optimizer", "scheduler", "trainer", "tracking", "experiment", "debug"]
NEEDS_NAME = {"torchvision": "mobilenet_v3_small", "timm": "resnet10t"}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option):
    extra = [f"model.name={NEEDS_NAME[option]}"] if group == "model" and option in NEEDS_NAME else []
    if group == "dataset" and option == "imagefolder":
        extra.append("dataset.root=/some/where")
    cfg = compose_cfg(f"{group}={option}", *extra)
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert {"model", "strategy", "dataset", "optimizer", "scheduler", "trainer", "tracking"} <= set(container)


def test_each_group_has_the_options_the_docs_promise():
    assert {"alexnet", "vgg16", "resnet18", "torchvision", "timm", "efficientnet_lite0", "efficientnet_lite1",
            "efficientnet_lite2"} <= set(options("model"))
    assert set(options("strategy")) == {"finetune", "freeze", "partial_freeze", "lp_ft", "gradual_unfreeze"}
    assert {"hymenoptera", "imagefolder", "cifar10", "digits"} <= set(options("dataset"))
    assert {"quickstart", "tutorial", "offline_backbones"} <= set(options("experiment"))


def test_tutorial_experiment_is_the_tutorials_recipe():
    cfg = compose_cfg("experiment=tutorial")
    assert (cfg.trainer.epochs, cfg.trainer.batch_size) == (25, 4)
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.momentum) == ("sgd", 0.001, 0.9)
    assert (cfg.scheduler.name, cfg.scheduler.decay_epochs, cfg.scheduler.decay_rate) == ("step", 7, 0.1)
    assert cfg.dataset.name == "hymenoptera"


def test_unknown_group_option_names_the_available_ones():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="Available options in 'strategy'"):
        compose_cfg("strategy=unfreeze")
