"""Every backbone gets a head for the dataset's class count, whatever its family."""

import pytest
import torch

from tests.conftest import compose_cfg
from tl.models import backbones

PRESETS = ["alexnet", "vgg16", "resnet18", "efficientnet_lite0", "mobilenet_v3_small_scratch"]


def build(cfg_model, num_classes=3):
    b = backbones.create(cfg_model)
    return backbones.attach_head(b, num_classes, cfg_model.get("stages"))


def logits_shape(model, size):
    model.eval()
    with torch.no_grad():
        return tuple(model(torch.randn(2, 3, size, size)).shape)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_gets_a_head_for_the_class_count(preset):
    cfg = compose_cfg(f"model={preset}", "model.pretrained=false")
    b = build(cfg.model, num_classes=3)
    size = 64 if preset in ("alexnet", "vgg16") else 32
    assert logits_shape(b.model, size) == (2, 3)
    assert b.head and b.stages


@pytest.mark.parametrize("name,size", [
    ("squeezenet1_0", 64), ("mobilenet_v3_small", 32), ("densenet121", 32),
    ("efficientnet_b0", 32), ("convnext_tiny", 32), ("regnet_y_400mf", 32), ("vit_b_16", 224),
])
def test_torchvision_families_get_a_head(name, size):
    cfg = compose_cfg("model=torchvision", f"model.name={name}", "model.pretrained=false")
    b = build(cfg.model, num_classes=5)
    assert logits_shape(b.model, size) == (2, 5)


def test_inception_aux_head_is_replaced_too():
    cfg = compose_cfg("model=torchvision", "model.name=inception_v3", "model.pretrained=false")
    b = build(cfg.model, num_classes=4)
    assert b.head == ["AuxLogits.fc", "fc"]
    b.model.train()
    out = b.model(torch.randn(2, 3, 299, 299))
    assert out.logits.shape == (2, 4) and out.aux_logits.shape == (2, 4)


@pytest.mark.parametrize("name", ["resnet10t", "convnext_atto", "mobilenetv3_small_050", "vit_tiny_patch16_224"])
def test_timm_families_get_a_head(name):
    cfg = compose_cfg("model=timm", f"model.name={name}", "model.pretrained=false")
    b = build(cfg.model, num_classes=6)
    size = 224 if name.startswith("vit") else 32
    assert logits_shape(b.model, size) == (2, 6)
    assert b.model.get_classifier().weight.shape[0] == 6
