"""Backbones built once per process: a sweep's runs over one model start from copies.

Building a model (its modules, their random init, reading and mapping pretrained weights)
costs 0.3-1.5 s, paid again by every run of an in-process sweep over heads, learning rates or
seeds. Each build is kept untouched; a run gets a deep copy, so what it trains, freezes or
swaps never reaches the next run. Random init draws from torch's global generator and later
draws (the new head, dropout) follow on from it, so a copy also sets the generator to where a
real build would leave it: the key holds the generator's state before the build, the entry
the state after. A run's numbers do not depend on whether its backbone was built or copied.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from tl.runtime.parallel import intra_op_threads
from tl.runtime.paths import resolve

MAX_KEPT = 2  # a sweep over a few models still reuses; a long list of models holds two


@dataclass
class _Entry:
    model: nn.Module
    rest: dict
    rng_after: torch.Tensor


_KEPT: OrderedDict[str, _Entry] = OrderedDict()


def _weights_identity(cfg) -> dict:
    w = cfg.get("weights")
    if not w:
        return {}
    path = resolve(w)
    try:
        st = path.stat()
    except OSError:
        return {"weights": str(path)}  # the build reports it
    return {"weights": str(path), "size": st.st_size, "mtime": st.st_mtime_ns}


def key(cfg) -> str:
    from omegaconf import OmegaConf

    parts = {"model": OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg),
             "file": _weights_identity(cfg),
             "rng": hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()}
    return json.dumps(parts, sort_keys=True, default=str)


def get_or_build(cfg, build: Callable[[], tuple[nn.Module, dict]]) -> tuple[nn.Module, dict]:
    """`build()` returns (model, other fields); a copy of a kept build when `cfg` and the
    generator state match one."""
    k = key(cfg)
    entry = _KEPT.get(k)
    if entry is not None:
        _KEPT.move_to_end(k)
        torch.set_rng_state(entry.rng_after)
        return _copy(entry.model), copy.deepcopy(entry.rest)
    model, rest = build()
    _KEPT[k] = _Entry(_copy(model), copy.deepcopy(rest), torch.get_rng_state())
    while len(_KEPT) > MAX_KEPT:
        _KEPT.popitem(last=False)
    return model, rest


def _copy(model: nn.Module) -> nn.Module:
    # One thread: a copy is ~150 small tensor clones, and split across busy cores each waits
    # on the slowest (10x slower on a loaded 2-core machine, measured).
    with intra_op_threads(1):
        return copy.deepcopy(model)


def clear() -> None:
    _KEPT.clear()
