"""A nested config as flat `a.b.c -> value` pairs: the one flattening that run params, a
reproduction's config comparison and the server's list of keys all use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flat(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """Every leaf of `tree` under its dotted key. Lists are leaves; an empty mapping has none."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
