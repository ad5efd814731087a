"""One training epoch and one evaluation pass: the readable core of a run."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from tl.runtime.machine import Runtime
from tl.runtime.precision import autocast
from tl.training.strategies import Plan, set_train_mode


@dataclass
class EpochResult:
    loss: float
    acc: float
    images: int
    seconds: float


class Preprocess:
    """Batch to device; uint8 images become normalised floats there."""

    def __init__(self, rt: Runtime, mean=None, std=None):
        self.rt = rt
        self.mean = None if mean is None else torch.tensor(mean, device=rt.device).view(1, -1, 1, 1) * 255
        self.std = None if std is None else torch.tensor(std, device=rt.device).view(1, -1, 1, 1) * 255

    def __call__(self, x, y):
        x = x.to(self.rt.device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = (x.float() - self.mean) / self.std
        if self.rt.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.rt.device, non_blocking=True)


def train_one_epoch(model: nn.Module, loader, optimizer, criterion, rt: Runtime, plan: Plan,
                    prep: Preprocess, scaler: torch.amp.GradScaler | None = None) -> EpochResult:
    set_train_mode(model, plan)
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=rt.device)
    correct = torch.zeros((), dtype=torch.int64, device=rt.device)
    seen = 0
    for x, y in loader:
        x, y = prep(x, y)
        with autocast(rt.device, rt.autocast_dtype):
            logits = model(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        loss_sum += loss.detach().double() * y.numel()
        correct += (logits.argmax(1) == y).sum()
        seen += y.numel()
    return EpochResult(loss_sum.item() / max(seen, 1), correct.item() / max(seen, 1), seen,
                       time.perf_counter() - start)


@torch.inference_mode()
def evaluate(model: nn.Module, loader, criterion, rt: Runtime, prep: Preprocess) -> EpochResult:
    model.eval()
    start = time.perf_counter()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = prep(x, y)
        with autocast(rt.device, rt.autocast_dtype):
            logits = model(x)
        loss_sum += criterion(logits.float(), y).item() * y.numel()
        correct += (logits.argmax(1) == y).sum().item()
        seen += y.numel()
    return EpochResult(loss_sum / max(seen, 1), correct / max(seen, 1), seen, time.perf_counter() - start)
