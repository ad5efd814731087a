"""Train and val transforms from the weights' data config, with the tutorial's augmentation.

Transforms end in uint8 CHW tensors; normalisation happens batched on the device
(`tl.engine.Preprocess`), which moves 4x fewer bytes and keeps per-image work small. The same
transforms take PIL images (streamed from disk) and decoded uint8 tensors (cached).
"""

from __future__ import annotations

from torchvision.transforms import v2

from tl.models.backbones import DataConfig

_INTERP = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
}


def _interp(data: DataConfig):
    return _INTERP.get(data.interpolation, v2.InterpolationMode.BILINEAR)


def train_transform(data: DataConfig, hflip: bool, crop_scale=(0.08, 1.0)) -> v2.Compose:
    ops = [v2.RandomResizedCrop(data.input_size, scale=tuple(crop_scale), interpolation=_interp(data),
                                antialias=True)]
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops + [v2.ToImage()])


def val_transform(data: DataConfig) -> v2.Compose:
    return v2.Compose([
        v2.Resize(data.resize_size, interpolation=_interp(data), antialias=True),
        v2.CenterCrop(data.input_size),
        v2.ToImage(),
    ])
