"""lite1 and lite2, like lite0: the shipped ImageNet weights map one for one onto timm's
models, load offline through the presets at their own input size, and still classify ImageNet
images."""

import pytest
import torch
from sklearn.datasets import load_sample_images
from torchvision.transforms import v2

from tests.conftest import compose_cfg
from tl.models import catalog
from tl.errors import ConfigError
from tl.models import backbones, lite

SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


@pytest.mark.parametrize("name", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_checkpoint_maps_one_for_one_onto_timm(name):
    import timm

    source = torch.load(lite.checkpoint_path(name), weights_only=True)
    target = timm.create_model(name).state_dict()
    mapped = lite.map_state_dict(source, target, name)
    assert len(mapped) == 386 and list(mapped) == list(target)
    assert all(mapped[k].shape == target[k].shape for k in target)


def test_a_checkpoint_of_another_width_is_refused_with_the_keys_named():
    import timm

    source = torch.load(lite.checkpoint_path("tf_efficientnet_lite1"), weights_only=True)
    target = timm.create_model("tf_efficientnet_lite2").state_dict()
    with pytest.raises(ConfigError, match=r"does not fit timm's layout: _blocks\.4\._project_conv\.weight\(40, 144, 1, 1\) "
                                         r"-> blocks\.2\.0\.conv_pwl\.weight\(48, 144, 1, 1\)"):
        lite.map_state_dict(source, target, "tf_efficientnet_lite2")


def test_a_name_without_shipped_weights_is_refused():
    with pytest.raises(ConfigError, match="model.name='tf_efficientnet_lite3' has no shipped weights"):
        lite.checkpoint_path("tf_efficientnet_lite3")


@pytest.mark.parametrize("preset", ["efficientnet_lite1", "efficientnet_lite2"])
def test_pretrained_preset_keeps_its_imagenet_behaviour_at_its_own_input_size(preset):
    b = backbones.create(compose_cfg(f"model={preset}").model)
    d = b.data
    assert d.input_size == SIZES[preset]
    tf = v2.Compose([v2.ToImage(), v2.Resize(d.resize_size, interpolation=v2.InterpolationMode.BICUBIC),
                     v2.CenterCrop(d.input_size), v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize(d.mean, d.std)])
    temple = load_sample_images().images[0]  # a Chinese temple, shipped with scikit-learn
    x = tf(torch.from_numpy(temple.copy()).permute(2, 0, 1)).unsqueeze(0)
    b.model.eval()
    with torch.no_grad():
        p = b.model(x).softmax(1)[0]
    # ImageNet "palace", confidently; a wrongly mapped tensor leaves near-uniform noise. (The
    # sample flower, lite0's second check, is no daisy to lite1/2: their top guesses there are
    # honeycomb and mushroom at < 5%, too unsure to pin.)
    assert p.argmax().item() == 698 and p[698] > 0.3


def test_tl_models_lists_the_three_presets_as_offline():
    entries = {e.name: e for e in catalog.presets("efficientnet_lite*")}
    assert set(entries) == set(SIZES)
    assert all(e.weights == catalog.OFFLINE for e in entries.values())
    notes = {e.name: e.note for e in catalog.timm_models("tf_efficientnet_lite*")}
    assert notes["tf_efficientnet_lite2"] == "offline as the preset model=efficientnet_lite2"
    assert notes["tf_efficientnet_lite3"] == ""


def test_the_offline_backbones_experiment_sweeps_the_three_lites_over_the_strategies():
    from omegaconf import OmegaConf

    from tests.conftest import CONF

    params = OmegaConf.load(CONF / "experiment" / "offline_backbones.yaml").hydra.sweeper.params
    assert params.model.split(",") == list(SIZES)
    assert params.strategy.split(",") == ["finetune", "freeze", "lp_ft", "gradual_unfreeze"]
    for model in SIZES:
        cfg = compose_cfg("experiment=offline_backbones", f"model={model}", "strategy=lp_ft")
        assert (cfg.dataset.name, cfg.model.source) == ("hymenoptera", "lite0" if model.endswith("0") else "lite")
