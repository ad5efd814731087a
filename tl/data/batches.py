"""The one protocol every training and evaluation loop iterates, whatever feeds it: images
streamed or decoded through a DataLoader (`EpochLoader`), uint8 tensors already on the device
(`device_batches`), or cached backbone features (`tl.training.features.FeatureBatches`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader


@runtime_checkable
class Batches(Protocol):
    """(inputs, targets) batches. `set_epoch(e)` before each epoch: epoch e's order and
    augmentation then depend on (seed, e) alone, so a resumed run repeats an uninterrupted one."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


class EpochLoader(DataLoader):
    """A DataLoader that speaks the protocol: `set_epoch` reaches its sampler (a fixed-order
    loader, such as val's, has nothing to reseed)."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
