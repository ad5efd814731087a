"""One autocast context for every forward pass tl makes (training, evaluation, frozen passes,
the probe and the benchmark), so a precision choice means the same everywhere."""

from __future__ import annotations

import torch


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """Autocast to `dtype` on `device`'s type; a no-op context when `dtype` is None (fp32)."""
    device_type = device.type if isinstance(device, torch.device) else str(device)
    return torch.autocast(device_type, dtype=dtype, enabled=dtype is not None)
