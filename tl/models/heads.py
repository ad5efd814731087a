"""Replace the ImageNet classifier with one for the dataset's classes, for every backbone."""

from __future__ import annotations

from torch import nn

from tl.errors import ConfigError


def _get(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def classifier_names(model: nn.Module, num_outputs: int) -> list[str]:
    """Modules that produce the `num_outputs` class logits, main head last.

    Every torchvision family ends in such a layer: `fc`, `classifier[-1]`, `heads.head`,
    squeezenet's 1x1 conv, and inception/googlenet's auxiliary heads as well.
    """
    names = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.out_features == num_outputs:
            names.append(name)
        elif isinstance(m, nn.Conv2d) and m.out_channels == num_outputs and m.kernel_size == (1, 1):
            names.append(name)
    return names


def replace_torchvision_head(model: nn.Module, num_classes: int, imagenet_classes: int = 1000):
    names = classifier_names(model, imagenet_classes)
    if not names:
        raise ConfigError(
            f"{type(model).__name__} has no {imagenet_classes}-way classifier layer to replace: "
            "use a torchvision classification model (torchvision.models.list_models(torchvision.models))"
        )
    for name in names:
        old = _get(model, name)
        if isinstance(old, nn.Linear):
            new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        else:
            new = nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
        _set(model, name, new)
    return names


def timm_head_names(model: nn.Module) -> list[str]:
    classifier = model.get_classifier()
    if isinstance(classifier, nn.Module):
        for name, m in model.named_modules():
            if m is classifier:
                return [name]
    return []


def replace_timm_head(model: nn.Module, num_classes: int) -> list[str]:
    model.reset_classifier(num_classes)
    names = timm_head_names(model)
    if not names:
        raise ConfigError(f"timm model {type(model).__name__} has no classifier to replace")
    return names
