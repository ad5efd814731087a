"""Decode each image once: uint8 tensors in memory, augmented on tensors every epoch.

Small-image fine-tuning is loader-bound: decoding and resizing the same JPEGs every epoch
costs more than the model on a few CPU cores. Images are decoded once, resized so their
shorter side is what the transform needs (with room left for random resized crops), and kept
as uint8 up to a memory cap; past the cap the rest stream from disk as before.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tl.data.imagefiles import to_rgb

log = logging.getLogger(__name__)


def decode(path: Path, shorter_side: int) -> torch.Tensor:
    """RGB uint8 CHW, downscaled (never upscaled) so the shorter side is `shorter_side`."""
    with Image.open(path) as im:
        im.draft("RGB", (shorter_side, shorter_side))  # JPEG: decode at 1/2, 1/4... when big
        im = to_rgb(im)
        w, h = im.size
        if min(w, h) > shorter_side:
            scale = shorter_side / min(w, h)
            im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR,
                           reducing_gap=3.0)
        arr = np.asarray(im, dtype=np.uint8)
    # CHW view of HWC memory: torch's uint8 resize has a fast path for this layout.
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def decode_all(paths: list[Path], shorter_side: int, max_bytes: int,
               threads: int | None = None) -> list[torch.Tensor | None]:
    """Decode in parallel threads (PIL releases the GIL while decoding), up to `max_bytes`;
    images past the cap are None and stream from disk."""
    threads = threads or min(8, os.cpu_count() or 1)
    out: list[torch.Tensor | None] = [None] * len(paths)
    used, full = 0, False
    window = threads * 4  # decode a few ahead, not all: past the cap nothing more is decoded
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(paths), window):
            chunk = paths[start:start + window]
            for i, img in enumerate(pool.map(lambda p: decode(p, shorter_side), chunk), start):
                if used + img.numel() > max_bytes:
                    full = True
                    break
                out[i] = img
                used += img.numel()
            if full:
                break
    cached = sum(x is not None for x in out)
    if cached < len(paths):
        log.warning("decoded-image cache full at %.0f MB: %d of %d images stream from disk "
                    "(raise trainer.image_cache_mb to keep all)", used / 2**20, len(paths) - cached, len(paths))
    return out


class DecodedImages(Dataset):
    """Samples served from decoded uint8 tensors where cached, else from disk."""

    def __init__(self, samples: list[tuple[Path, int]], images: list[torch.Tensor | None],
                 shorter_side: int, transform):
        self.samples, self.images, self.shorter_side, self.transform = samples, images, shorter_side, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        img = self.images[i]
        if img is None:
            img = decode(path, self.shorter_side)
        return self.transform(img), label

    @property
    def targets(self) -> list[int]:
        return [y for _, y in self.samples]

    @property
    def cached_bytes(self) -> int:
        return sum(x.numel() for x in self.images if x is not None)
