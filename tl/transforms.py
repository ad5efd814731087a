"""Train and val transforms from the weights' data config, with the tutorial's augmentation."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from tl.backbones import DataConfig

_INTERP = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
}


def _interp(data: DataConfig):
    return _INTERP.get(data.interpolation, v2.InterpolationMode.BILINEAR)


def _to_normalized(data: DataConfig) -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(data.mean), list(data.std))]


def train_transform(data: DataConfig, hflip: bool, crop_scale=(0.08, 1.0)) -> v2.Compose:
    ops = [v2.ToImage(), v2.RandomResizedCrop(data.input_size, scale=tuple(crop_scale),
                                              interpolation=_interp(data), antialias=True)]
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops + _to_normalized(data))


def val_transform(data: DataConfig) -> v2.Compose:
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(data.resize_size, interpolation=_interp(data), antialias=True),
        v2.CenterCrop(data.input_size),
        *_to_normalized(data),
    ])
