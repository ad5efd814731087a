"""Build any backbone (torchvision, timm, shipped lite0/1/2) behind one surface.

A `Backbone` knows its model, its classifier module names, its stages and the input its
weights expect, so strategies and data code need no per-architecture branches.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

from torch import nn

from tl.errors import ConfigError, not_one_of
from tl.models import heads, lite, pristine
from tl.models import stages as stage_rules
from tl.models.weights import load_into, read_state_dict
from tl.runtime.paths import resolve

SOURCES = ("torchvision", "timm", "lite", "lite0")  # lite0: the older name of lite


@dataclass
class DataConfig:
    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # "bilinear" | "bicubic" | "nearest"


@dataclass
class Backbone:
    model: nn.Module
    source: str
    name: str
    data: DataConfig
    head: list[str] = field(default_factory=list)
    stages: list[list[str]] = field(default_factory=list)


def _unknown(kind: str, name: str, choices: list[str], hint: str) -> ConfigError:
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.6)
    near = f" Close matches: {', '.join(close)}." if close else ""
    return ConfigError(f"model.name={name!r} is not a {kind} model.{near} {hint}")


def torchvision_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _weights_hint(name: str) -> str:
    return (
        f"Weights for {name} could not be loaded (offline?). Put the file in torch's cache "
        "(~/.cache/torch/hub/checkpoints), pass model.weights=PATH, or use model.pretrained=false."
    )


def _torchvision(cfg) -> tuple[nn.Module, DataConfig]:
    import torchvision

    names = torchvision_names()
    if cfg.name not in names:
        raise _unknown("torchvision classification", cfg.name, names,
                       "List them with torchvision.models.list_models(torchvision.models).")
    weights_enum = torchvision.models.get_model_weights(cfg.name)
    default = weights_enum.DEFAULT
    use_hub = bool(cfg.pretrained) and not cfg.weights
    try:
        model = torchvision.models.get_model(cfg.name, weights=default if use_hub else None)
    except Exception as e:  # URLError, HTTPError, checksum errors...
        if not use_hub:
            raise
        raise ConfigError(f"{_weights_hint(cfg.name)} ({type(e).__name__}: {e})") from None
    t = default.transforms()
    data = DataConfig(
        input_size=int(t.crop_size[0]),
        resize_size=int(t.resize_size[0]),
        mean=tuple(t.mean),
        std=tuple(t.std),
        interpolation=t.interpolation.value,
    )
    return model, data


def _timm_data(model: nn.Module) -> DataConfig:
    from timm.data import resolve_model_data_config

    d = resolve_model_data_config(model)
    size = int(d["input_size"][-1])
    return DataConfig(
        input_size=size,
        resize_size=int(math.floor(size / d["crop_pct"])),
        mean=tuple(d["mean"]),
        std=tuple(d["std"]),
        interpolation=d["interpolation"],
    )


def _timm(cfg, pretrained: bool) -> tuple[nn.Module, DataConfig]:
    import timm

    if not timm.is_model(cfg.name):
        raise _unknown("timm", cfg.name, timm.list_models(), "List them with timm.list_models('*pattern*').")
    try:
        model = timm.create_model(cfg.name, pretrained=pretrained)
    except Exception as e:
        if not pretrained:
            raise
        raise ConfigError(f"{_weights_hint(cfg.name)} ({type(e).__name__}: {e})") from None
    return model, _timm_data(model)


def _scaled(data: DataConfig, input_size) -> DataConfig:
    if input_size is None:
        return data
    size = int(input_size)
    if size < 8:
        raise ConfigError(f"model.input_size={size} is too small: use at least 8 (or null)")
    resize = int(round(size * data.resize_size / data.input_size))
    return DataConfig(size, resize, data.mean, data.std, data.interpolation)


def create(cfg, reuse: bool = False) -> Backbone:
    """The backbone with its original 1000-class head and weights loaded. `reuse`: a copy of
    this process's earlier build of the same config when there is one (`tl.models.pristine`)."""
    if cfg.source not in SOURCES:
        raise not_one_of("model.source", cfg.source, SOURCES)
    if reuse:
        model, rest = pristine.get_or_build(cfg, lambda: _build(cfg))
    else:
        model, rest = _build(cfg)
    return Backbone(model=model, **rest)


def _build(cfg) -> tuple[nn.Module, dict]:
    source = cfg.source
    if source == "torchvision":
        model, data = _torchvision(cfg)
    elif source == "timm":
        model, data = _timm(cfg, pretrained=bool(cfg.pretrained) and not cfg.weights)
    else:
        model, data = _timm(cfg, pretrained=False)
        if cfg.pretrained and not cfg.weights:
            lite.load_pretrained(model, cfg.name)
    if cfg.weights:
        path = resolve(cfg.weights)
        load_into(model, read_state_dict(path), f"model.weights={str(path)!r}")
    return model, {"source": source, "name": cfg.name, "data": _scaled(data, cfg.input_size)}


def _stages(backbone: Backbone, head: list[str], preset_stages) -> list[list[str]]:
    model = backbone.model
    if preset_stages:
        raw = [list(s) for s in preset_stages]
    elif backbone.source == "torchvision":
        raw = stage_rules.generic_stages(model)
    else:
        raw = stage_rules.timm_stages(model)
    return stage_rules.finalize(raw, model, head)


def attach_head(backbone: Backbone, num_classes: int, preset_stages=None) -> Backbone:
    """Swap in a `num_classes` head and work out the stages around it."""
    model = backbone.model
    if backbone.source == "torchvision":
        backbone.head = heads.replace_torchvision_head(model, num_classes)
    else:
        backbone.head = heads.replace_timm_head(model, num_classes)
    backbone.stages = _stages(backbone, backbone.head, preset_stages)
    return backbone


def stage_count(backbone: Backbone, preset_stages=None) -> int:
    """The number of stages `attach_head` will find. The head swap keeps module names, so it
    is known before the data is scanned: a bad `frozen_stages` is refused before that work."""
    model = backbone.model
    if backbone.source == "torchvision":
        head = heads.classifier_names(model, 1000)
    else:
        head = heads.timm_head_names(model)
    return len(_stages(backbone, head, preset_stages))
