"""Backbone stages, in forward order, as lists of parameter-name prefixes.

`partial_freeze` freezes the first N stages. Stages come from, in order of preference: the
model preset (`model.stages` in conf/), timm's own `group_matcher`, or a generic rule for
torchvision models.
"""

from __future__ import annotations

from torch import nn

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def matches(param_name: str, prefix: str) -> bool:
    return param_name == prefix or param_name.startswith(prefix + ".")


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def generic_stages(model: nn.Module) -> list[list[str]]:
    """Children of `features` (else of the model), leaf layers grouped up to each pooling layer.

    A container child (a residual stage, an inverted-residual block) is a stage of its own;
    runs of plain layers (conv, bn, relu ... pool) form one stage, as VGG's blocks do.
    """
    features = getattr(model, "features", None)
    root, prefix = (features, "features.") if isinstance(features, nn.Module) else (model, "")
    stages, pending = [], []
    for name, child in root.named_children():
        full = prefix + name
        leaf = not any(True for _ in child.children())
        if leaf:
            if _has_params(child):
                pending.append(full)
            if isinstance(child, _POOLS) and pending:
                stages.append(pending)
                pending = []
            continue
        if pending:
            stages.append(pending)
            pending = []
        if _has_params(child):
            stages.append([full])
    if pending:
        stages.append(pending)
    return stages


def timm_stages(model: nn.Module) -> list[list[str]]:
    from timm.models import group_parameters

    groups = group_parameters(model, model.group_matcher(coarse=True))
    return [list(names) for names in groups.values()]


def finalize(stages: list[list[str]], model: nn.Module, head: list[str]) -> list[list[str]]:
    """Drop head parameters from the stages, and add the backbone parameters no stage names
    (e.g. a hidden classifier layer after `features`) as a last stage."""
    names = [n for n, _ in model.named_parameters()]
    in_head = {n for n in names if any(matches(n, h) for h in head)}
    out, seen = [], set(in_head)
    for stage in stages:
        owned = [n for n in names if n not in seen and any(matches(n, p) for p in stage)]
        if owned:
            out.append(owned)
            seen.update(owned)
    rest = [n for n in names if n not in seen]
    if rest:
        out.append(rest)
    return out
