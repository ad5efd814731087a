"""Which data a run saw, as one id: `tl.data_id` = "<dataset name, or the root folder's name for
imagefolder>-<8 hex of a content digest>". Two different folders never share it, the same
content always gives it (a copy too: file bytes and relative paths, no mtimes). Computed here
for a run as it starts (`tl.training.identity` tags it) and for a run logged before the tag
(`data_id_from_params`, `tl compare`'s ranking agreement).

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
