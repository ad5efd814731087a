"""The compute ceiling: train steps and eval forwards on in-memory tensors, channels_last,
at the precision tl picked for this machine. No data loading, no logging: what the model
math alone allows."""

from __future__ import annotations

import time

import torch
from torch import nn

from tl.runtime.machine import Runtime
from tl.runtime.precision import autocast


def _timed(fn, reps: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def measure(model: nn.Module, rt: Runtime, batch: int = 32, size: int = 224, reps: int = 3) -> dict:
    model = model.to(rt.device, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device=rt.device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), device=rt.device)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    dtype = rt.autocast_dtype

    def train_step():
        with autocast(rt.device, dtype):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.inference_mode()
    def eval_step():
        with autocast(rt.device, dtype):
            model(x)

    model.train()
    train_s = _timed(train_step, reps)
    model.eval()
    eval_s = _timed(eval_step, reps)
    return {"train_images_per_second": batch / train_s, "eval_images_per_second": batch / eval_s}


def epoch_rate(ceiling: dict, n_train: int, n_val: int) -> float:
    """Images per second of an epoch (train + val) at the ceiling's rates."""
    seconds = n_train / ceiling["train_images_per_second"] + n_val / ceiling["eval_images_per_second"]
    return (n_train + n_val) / seconds
