"""Inference for a run's diagnostics: one pass over a split gives its targets, predictions,
loss and accuracy, and a few sample images spread over it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tl.runtime.precision import autocast

MAX_SAMPLES = 16


@dataclass
class Predictions:
    targets: list[int] = field(default_factory=list)
    preds: list[int] = field(default_factory=list)
    samples: list[tuple[torch.Tensor, int, int]] = field(default_factory=list)  # (uint8 CHW, true, predicted)
    loss: float = 0.0  # mean cross-entropy, as `engine.evaluate` computes it

    @property
    def acc(self) -> float:
        return sum(t == p for t, p in zip(self.targets, self.preds)) / max(len(self.targets), 1)


def spread(n_items: int, k: int) -> set[int]:
    """k indices spread evenly over n_items: val sets are sorted by class, so the first k
    images would often all be one class."""
    if n_items <= k:
        return set(range(n_items))
    return {round(i * (n_items - 1) / (k - 1)) for i in range(k)} if k > 1 else {0}


@torch.inference_mode()
def predict(model, loader, prep, rt, n_items: int, n_samples: int = MAX_SAMPLES) -> Predictions:
    """Targets, predictions and loss over `loader`, plus up to `n_samples` (uint8 image, true,
    predicted) spread over it when the batches are images (not cached features)."""
    model.eval()
    keep = spread(n_items, n_samples)
    criterion = torch.nn.CrossEntropyLoss()
    out, loss_sum, seen = Predictions(), 0.0, 0
    for x, y in loader:
        xd, yd = prep(x, y)
        with autocast(rt.device, rt.autocast_dtype):
            logits = model(xd)
        loss_sum += criterion(logits.float(), yd).item() * yd.numel()
        p = logits.argmax(1).cpu()
        y = y.cpu()
        out.targets += y.tolist()
        out.preds += p.tolist()
        if x.dtype == torch.uint8 and x.dim() == 4:
            out.samples += [(x[i].cpu(), int(y[i]), int(p[i])) for i in range(len(y)) if seen + i in keep]
        seen += len(y)
    out.loss = loss_sum / max(seen, 1)
    return out
