"""The compute ceiling: train steps and eval forwards on in-memory tensors, channels_last,
at the precision tl picked for this machine. No data loading, no logging: what the model
math alone allows."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from tl.runtime.machine import Runtime
from tl.runtime.precision import autocast


def measure(model: nn.Module, rt: Runtime, n_train: int, n_val: int, epochs: int, batch: int = 32,
            size: int = 224) -> dict:
    """Epochs of tl's shape (train steps over `n_train` images, then eval over `n_val`), timed
    each; their median rate, as tl's own epoch rate is the median of its epochs'. As long as
    tl's run, not a burst of a few steps: a 3-step ceiling read 31 to 57 img/s from one process
    to the next on the same machine, while the sustained rate held."""
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

    def steps(n: int) -> int:
        return -(-n // batch)

    model.train()
    train_step()  # warm-up: oneDNN builds its kernels for these shapes once
    model.eval()
    eval_step()
    rates, train_s, eval_s = [], 0.0, 0.0
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        for _ in range(steps(n_train)):
            train_step()
        mid = time.perf_counter()
        model.eval()
        for _ in range(steps(n_val)):
            eval_step()
        end = time.perf_counter()
        train_s, eval_s = train_s + mid - start, eval_s + end - mid
        rates.append((steps(n_train) + steps(n_val)) * batch / (end - start))
    return {"train_images_per_second": epochs * steps(n_train) * batch / train_s,
            "eval_images_per_second": epochs * steps(n_val) * batch / eval_s,
            "epoch_images_per_second": statistics.median(rates)}
