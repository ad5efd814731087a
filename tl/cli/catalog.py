"""`tl models [PATTERN]`: the backbones tl can train, and which have weights on this machine
(`tl.models.catalog` decides; this prints it)."""

from __future__ import annotations

from tl.models.catalog import OFFLINE, Entry, presets, timm_models, torchvision_models


def _section(title: str, entries: list[Entry]) -> list[str]:
    width = max((len(e.name) for e in entries), default=0)
    lines = [f"{title}: {len(entries)}"]
    lines += [f"  {e.name.ljust(width)}  {e.weights.ljust(10)}  {e.note}".rstrip() for e in entries]
    return lines


def run(pattern: str) -> int:
    sections = [
        ("tl presets (model=NAME)", presets(pattern)),
        ("torchvision (model=torchvision model.name=NAME)", torchvision_models(pattern)),
        ("timm (model=timm model.name=NAME)", timm_models(pattern)),
    ]
    lines = []
    for title, entries in sections:
        lines += [*_section(title, entries), ""]
    found = [e for _, entries in sections for e in entries]
    offline = sum(e.weights == OFFLINE for e in found)
    lines.append(f"{len(found)} match {pattern!r}; {offline} usable offline. Weights marked "
                 "'download' are fetched on first use (or pass model.weights=PATH, or "
                 "model.pretrained=false).")
    print("\n".join(lines))
    return 0 if found else 1
