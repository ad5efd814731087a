"""A frozen backbone for inference: each batch norm that follows a convolution folded into it.

In eval mode a BatchNorm2d is a fixed affine map per channel; after a convolution it can be
folded into the convolution's weights and bias, and the pass over the data skips it. For the
frozen pass of `freeze` (lite0 at 224 px, bf16, channels_last, quiet 2-core Xeon with AMX) that
took 91 img/s to 139 img/s: the norms' own passes over memory were a third of the time.

Which norm follows which convolution is read from one traced forward (the order modules run
in, and whether the norm's input is the very tensor the convolution returned), not from
module names, so it holds for any torchvision or timm family. The folded copy must give the
original's features on the traced input, or the original is used as it is: a convolution's
output that something else also reads (a pre-norm residual) cannot be folded.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

# timm's BatchNormAct2d: batch norm, then its own dropout and activation, which stay.
_NORM_ACT = "BatchNormAct2d"


def fold_batchnorms(model: nn.Module, probe: torch.Tensor, features_of: str) -> tuple[nn.Module, int]:
    """(an eval-mode copy of `model` with the foldable batch norms folded, how many), or
    (`model`, 0) when none folds or the copy's input to `features_of` (a module's name) on
    `probe` differs from the original's. `model`'s weights are never changed."""
    pairs, features = _conv_norm_pairs(model, probe, features_of)
    if not pairs:
        return model, 0
    folded = copy.deepcopy(model).eval()
    for conv_name, norm_name in pairs:
        conv, norm = folded.get_submodule(conv_name), folded.get_submodule(norm_name)
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var,
                                            norm.eps, norm.weight, norm.bias)
        conv.weight, conv.bias = weight, bias
        parent, _, leaf = norm_name.rpartition(".")
        rest = nn.Sequential(norm.drop, norm.act) if type(norm).__name__ == _NORM_ACT else nn.Identity()
        setattr(folded.get_submodule(parent), leaf, rest)
    if not _same(features, _features(folded, probe, features_of)):
        return model, 0
    return folded, len(pairs)


def _foldable_norm(m: nn.Module) -> bool:
    return ((type(m) is nn.BatchNorm2d or type(m).__name__ == _NORM_ACT) and not m.training
            and m.running_mean is not None and m.running_var is not None)


@torch.inference_mode()
def _conv_norm_pairs(model: nn.Module, probe: torch.Tensor,
                     features_of: str) -> tuple[list[tuple[str, str]], torch.Tensor]:
    """(the (convolution, norm) names to fold, the original's features on `probe`), from one
    forward."""
    calls = []  # (name, module, input's data_ptr, output's data_ptr), in the order they ran
    hooks = [m.register_forward_hook(lambda m, args, out, name=name: calls.append(
                 (name, m, args[0].data_ptr() if args and torch.is_tensor(args[0]) else None,
                  out.data_ptr() if torch.is_tensor(out) else None)))
             for name, m in model.named_modules() if isinstance(m, nn.Conv2d) or _foldable_norm(m)]
    captured = []
    hooks.append(model.get_submodule(features_of).register_forward_pre_hook(
        lambda m, args: captured.append(args[0].float())))
    try:
        model.eval()(probe)
    finally:
        for h in hooks:
            h.remove()
    runs = {}
    for name, *_ in calls:
        runs[name] = runs.get(name, 0) + 1
    pairs = []
    for (c_name, conv, _, c_out), (n_name, norm, n_in, _) in zip(calls, calls[1:]):
        if (isinstance(conv, nn.Conv2d) and _foldable_norm(norm) and c_out is not None and c_out == n_in
                and runs[c_name] == 1 and runs[n_name] == 1 and norm.num_features == conv.out_channels):
            pairs.append((c_name, n_name))
    return pairs, captured[0]


@torch.inference_mode()
def _features(model: nn.Module, probe: torch.Tensor, features_of: str) -> torch.Tensor:
    captured = []
    hook = model.get_submodule(features_of).register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    try:
        model(probe)
    finally:
        hook.remove()
    return captured[0].float()


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool((a - b).abs().max() <= 1e-3 * a.abs().max() + 1e-5)
