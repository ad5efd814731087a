"""lite0's shipped weights: kept for callers of the lite0-only API; `tl.lite` serves lite0/1/2."""

from __future__ import annotations

import torch
from torch import nn

from tl import lite

TIMM_NAME = "tf_efficientnet_lite0"


def checkpoint_path() -> str:
    return lite.checkpoint_path(TIMM_NAME)


def map_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict:
    return lite.map_state_dict(source, target, TIMM_NAME)


def load_pretrained(model: nn.Module) -> None:
    lite.load_pretrained(model, TIMM_NAME)
