"""Batches served from tensors that live on the training device.

Val: its transform is deterministic, so each image is transformed once and the epoch is a
slice of one uint8 tensor — no per-epoch resizing, on CPU or GPU.

Train (on a GPU): the decoded images are resized once to S x S (remembering their original
shape) and kept in GPU memory; every batch's random resized crops are one `roi_align` call,
flips an index, so a GPU is fed from its own memory and stays compute-bound. Crop geometry is
torchvision's RandomResizedCrop (area scale, log-uniform aspect ratio, 10 tries, then a
centre crop), drawn in the original image's coordinates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from tl.runtime import seeding


class TensorBatches:
    """Fixed-size uint8 images already transformed: shuffled or in order, batch by batch."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, batch_size: int,
                 generator: torch.Generator | None = None):
        self.images, self.targets, self.batch_size, self.generator = images, targets, batch_size, generator

    def __len__(self) -> int:
        return -(-self.targets.numel() // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Val's order is fixed; nothing to reseed."""

    def __iter__(self):
        n = self.targets.numel()
        order = torch.randperm(n, generator=self.generator) if self.generator is not None else torch.arange(n)
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size].to(self.images.device)
            yield self.images[idx], self.targets[idx]


def pretransform(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample of a deterministic dataset, transformed once, as one uint8 tensor."""
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(xs), torch.tensor(ys)


def random_boxes(hw: torch.Tensor, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), tries: int = 10,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """RandomResizedCrop's boxes (x1, y1, x2, y2) for images of shapes `hw` [N, 2], vectorised."""
    n = hw.shape[0]
    h, w = hw[:, 0].float(), hw[:, 1].float()
    area = h * w
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    s = torch.empty(n, tries).uniform_(scale[0], scale[1], generator=generator)
    r = torch.exp(torch.empty(n, tries).uniform_(log_r[0], log_r[1], generator=generator))
    cw = torch.sqrt(area[:, None] * s * r).round()
    ch = torch.sqrt(area[:, None] * s / r).round()
    ok = (cw > 0) & (ch > 0) & (cw <= w[:, None]) & (ch <= h[:, None])
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    # Fallback as torchvision: the whole image clamped to the ratio range, centred.
    in_ratio = w / h
    fw = torch.where(in_ratio < ratio[0], w, torch.where(in_ratio > ratio[1], (h * ratio[1]).round(), w))
    fh = torch.where(in_ratio < ratio[0], (w / ratio[0]).round(), h)
    pick = first.clamp(min=0)
    bw = torch.where(first >= 0, cw[torch.arange(n), pick], fw)
    bh = torch.where(first >= 0, ch[torch.arange(n), pick], fh)
    ux = torch.rand(n, generator=generator)
    uy = torch.rand(n, generator=generator)
    x1 = torch.where(first >= 0, torch.floor(ux * (w - bw + 1)), ((w - bw) / 2).round())
    y1 = torch.where(first >= 0, torch.floor(uy * (h - bh + 1)), ((h - bh) / 2).round())
    return torch.stack([x1, y1, x1 + bw, y1 + bh], 1)


class DeviceTrainBatches:
    """Random-resized-crop + flip batches from S x S uint8 images held on the device."""

    def __init__(self, images: list[torch.Tensor], targets: list[int], side: int, out_size: int,
                 batch_size: int, device: torch.device, seed: int,
                 scale=(0.08, 1.0), hflip: bool = True):
        self.hw = torch.tensor([tuple(x.shape[-2:]) for x in images])
        self.data = torch.stack([
            F.interpolate(x[None].float(), size=(side, side), mode="bilinear", antialias=True,
                          align_corners=False).round().clamp(0, 255).to(torch.uint8)[0]
            for x in images]).to(device)
        self.targets = torch.tensor(targets)
        self.side, self.out_size, self.batch_size = side, out_size, batch_size
        self.seed, self.scale, self.hflip = seed, tuple(scale), hflip
        self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        """Epoch e's order, crops and flips depend on (seed, e) alone: resumable exactly."""
        self.generator = torch.Generator().manual_seed(seeding.epoch_seed(self.seed, epoch))

    def __len__(self) -> int:
        return -(-self.targets.numel() // self.batch_size)

    def __iter__(self):
        n = self.targets.numel()
        order = torch.randperm(n, generator=self.generator)
        boxes = random_boxes(self.hw, self.scale, generator=self.generator)
        # original-pixel boxes -> S x S pixel boxes
        sx = self.side / self.hw[:, 1].float()
        sy = self.side / self.hw[:, 0].float()
        boxes = boxes * torch.stack([sx, sy, sx, sy], 1)
        flips = torch.rand(n, generator=self.generator) < 0.5
        device = self.data.device
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            b = boxes[idx]
            rois = torch.cat([torch.arange(len(idx), dtype=torch.float32)[:, None], b], 1).to(device)
            crops = roi_align(self.data[idx.to(device)].float(), rois, self.out_size,
                              spatial_scale=1.0, sampling_ratio=2, aligned=True)
            if self.hflip:
                f = flips[idx].to(device)
                crops = torch.where(f[:, None, None, None], crops.flip(-1), crops)
            yield crops.round_().clamp_(0, 255).to(torch.uint8), self.targets[idx]
