"""Loading weight files safely, with mismatches named."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tl.errors import ConfigError
from tl.runtime.io import load_tensors


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"model.weights={str(path)!r} does not exist: give the path of a .pt/.pth state dict")
    try:
        obj = load_tensors(path)
    except Exception as e:
        raise ConfigError(f"model.weights={str(path)!r} is not a loadable state dict: {e}") from None
    for key in ("state_dict", "model"):  # common checkpoint wrappers, tl's own included
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"model.weights={str(path)!r} holds no state dict of tensors")
    return obj


def mismatches(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    own = model.state_dict()
    # Shape mismatches first: they say most about which architecture the file is for.
    problems = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [f"missing {k}" for k in own if k not in state]
    return problems


def load_into(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    problems = mismatches(model, state)
    if problems:
        shown = "; ".join(problems[:8]) + (f"; ... {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ConfigError(f"{what} does not fit the model ({len(problems)} mismatched keys): {shown}")
    model.load_state_dict(state)
