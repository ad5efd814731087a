"""Measure, once per machine, which CPU precision and memory layout train fastest.

Whether bf16 autocast and channels_last pay off on a CPU depends on the CPU (native bf16 dot
products, oneDNN's kernels): the same code trains at 0.7x on one Xeon and 2x on an EPYC. A few
timed train steps of a small conv net decide; the answer is cached per CPU model and torch
version, and every run logs it, so a reproduction elsewhere can tell machine from code.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from tl.runtime import io
from tl.runtime.precision import autocast

log = logging.getLogger(__name__)

COMBOS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]


def cache_file(cpu: str) -> Path:
    # A fact about the machine, not about a project or test: kept in the user's home.
    base = Path(os.environ.get("TL_MACHINE_CACHE") or Path.home() / ".cache")
    safe = "".join(c if c.isalnum() else "_" for c in cpu)[:80]
    return base / "tl" / f"cpu-probe-{safe}-torch{torch.__version__}.json"


def _net() -> nn.Module:
    # A real backbone at a small input: a toy net's layer mix misjudges the layout choice.
    import torchvision

    return torchvision.models.resnet18(num_classes=10)


def _rate(precision: str, channels_last: bool, steps: int = 2) -> float:
    torch.manual_seed(0)
    model = _net()
    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step():
        with autocast("cpu", dtype):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up: oneDNN picks its kernels
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * x.shape[0] / (time.perf_counter() - start)


def measure() -> dict:
    _rate("fp32", False, steps=1)  # the first use of oneDNN pays for its set-up: not a fp32 cost
    rates = {f"{p}{'+cl' if cl else ''}": max(_rate(p, cl), _rate(p, cl)) for p, cl in COMBOS}
    best = max(rates, key=rates.get)
    return {"rates": rates, "precision": best.split("+")[0], "channels_last": best.endswith("+cl"),
            "speedup_vs_fp32": rates[best] / rates["fp32"]}


def cpu_choice(cpu: str, bf16_native: bool) -> dict:
    """The fastest (precision, channels_last) on this CPU, from cache or a ~1 s probe.
    Without native bf16 the probe skips bf16: emulated bf16 is never the fast choice."""
    path = cache_file(cpu)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    result = measure()
    if not bf16_native and result["precision"] == "bf16":
        fp32 = {k: v for k, v in result["rates"].items() if k.startswith("fp32")}
        best = max(fp32, key=fp32.get)
        result.update(precision="fp32", channels_last=best.endswith("+cl"), speedup_vs_fp32=fp32[best] / fp32["fp32"])
    result["cpu"] = cpu
    try:
        io.atomic_write(path, lambda f: f.write(json.dumps(result, indent=1).encode()))
    except OSError as e:
        log.warning("could not cache the CPU probe at %s: %s", path, e)
    return result
