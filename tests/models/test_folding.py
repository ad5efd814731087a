"""A frozen backbone's pass folds each batch norm into the convolution before it, and gives the
same features; what cannot be folded is left as it is."""

import pytest
import torch
from torch import nn

from tests.conftest import compose_cfg
from tl.models import backbones
from tl.models.folding import fold_batchnorms


def pretrained_like(model: nn.Module) -> nn.Module:
    """Running statistics and affine terms far from a fresh init's, as trained weights have."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


def features(model, x, head):
    got = []
    h = model.get_submodule(head).register_forward_pre_hook(lambda m, a: got.append(a[0]))
    with torch.inference_mode():
        model(x)
    h.remove()
    return got[0]


@pytest.mark.parametrize("preset,norms", [("resnet18", 20), ("efficientnet_lite0", 49)])
def test_every_norm_after_a_convolution_folds_and_the_features_stay(preset, norms):
    b = backbones.create(compose_cfg(f"model={preset}", "model.pretrained=false").model)
    b = backbones.attach_head(b, 2, None)
    model = pretrained_like(b.model)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    folded, n = fold_batchnorms(model, x[:2], b.head[-1])
    assert n == norms
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(features(folded, x, b.head[-1]), features(model, x, b.head[-1]), rtol=1e-4, atol=1e-4)


def test_the_original_model_is_left_unchanged():
    b = backbones.attach_head(backbones.create(compose_cfg("model=resnet18", "model.pretrained=false").model), 2, None)
    model = pretrained_like(b.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorms(model, torch.randn(2, 3, 32, 32), b.head[-1])
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


class PreNormResidual(nn.Module):
    """The convolution's output is read twice: by the norm and by the skip connection."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Linear(3, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.fc((self.bn(y) + y).mean((2, 3)))


def test_a_convolution_whose_output_is_read_elsewhere_too_is_not_folded():
    model = pretrained_like(PreNormResidual())
    folded, n = fold_batchnorms(model, torch.randn(2, 3, 8, 8), "fc")
    assert (folded, n) == (model, 0)


def test_a_model_without_batch_norms_is_returned_as_it_is():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    assert fold_batchnorms(model, torch.randn(1, 3, 8, 8), "3") == (model, 0)
