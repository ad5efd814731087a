"""The shipped ImageNet weights load into timm's lite0 and still classify ImageNet images."""

import pytest
import torch
from sklearn.datasets import load_sample_images
from torchvision.transforms import v2

from tests.conftest import compose_cfg
from tl.errors import ConfigError
from tl.models import backbones, lite

LITE0 = "tf_efficientnet_lite0"


def test_checkpoint_maps_one_for_one_onto_timm():
    import timm

    source = torch.load(lite.checkpoint_path(LITE0), weights_only=True)
    target = timm.create_model(LITE0).state_dict()
    mapped = lite.map_state_dict(source, target, LITE0)
    assert len(mapped) == 296 and list(mapped) == list(target)


def test_a_shape_mismatch_is_refused_with_the_keys_named():
    import timm

    source = torch.load(lite.checkpoint_path(LITE0), weights_only=True)
    target = timm.create_model("tf_efficientnet_lite1").state_dict()
    with pytest.raises(ConfigError, match="lite0 checkpoint"):
        lite.map_state_dict(source, target, LITE0)


def test_pretrained_lite0_keeps_its_imagenet_behaviour():
    b = backbones.create(compose_cfg("model=efficientnet_lite0").model)
    d = b.data
    tf = v2.Compose([v2.ToImage(), v2.Resize(d.resize_size, interpolation=v2.InterpolationMode.BICUBIC),
                     v2.CenterCrop(d.input_size), v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize(d.mean, d.std)])
    images = load_sample_images().images  # a Chinese temple, a flower: shipped with scikit-learn
    x = torch.stack([tf(torch.from_numpy(img.copy()).permute(2, 0, 1)) for img in images])
    b.model.eval()
    with torch.no_grad():
        top1 = b.model(x).argmax(1).tolist()
    assert top1 == [698, 985]  # ImageNet "palace", "daisy"
