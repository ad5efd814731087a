"""The fast paths (decoded images, cached frozen features, per-machine choices) give the same
answers as the slow ones, and reuse only what is still valid."""

import torch

from tests.conftest import compose_cfg, make_image_folder
from tests.helpers.runs import runs
from tl.data import decoded
from tl.models import backbones
from tl.runtime import probe
from tl.runtime.machine import Runtime
from tl.tracking.readback import history
from tl.train import train
from tl.training import features, strategies
from tl.training.engine import Preprocess


def test_decoded_images_are_downscaled_once_and_never_upscaled(tmp_path):
    root = make_image_folder(tmp_path / "d", size=40, n_train=1, n_val=1)
    path = next((root / "train" / "ants").glob("*.png"))
    assert tuple(decoded.decode(path, 20).shape) == (3, 20, 20)
    assert tuple(decoded.decode(path, 64).shape) == (3, 40, 40)


def test_decoded_cache_respects_its_cap_and_streams_the_rest(tmp_path):
    root = make_image_folder(tmp_path / "d", size=16, n_train=4, n_val=0)
    paths = sorted((root / "train" / "ants").glob("*"))
    images = decoded.decode_all(paths, 16, max_bytes=2 * 3 * 16 * 16)
    assert sum(x is not None for x in images) == 2
    ds = decoded.DecodedImages([(p, 0) for p in paths], images, 16, lambda x: x)
    assert ds.cached_bytes <= 2 * 3 * 16 * 16
    assert all(torch.equal(ds[i][0], decoded.decode(p, 16)) for i, p in enumerate(paths))


def test_preprocess_normalises_uint8_batches_like_torchvision():
    from torchvision.transforms import v2

    rt = Runtime(torch.device("cpu"), "fp32", "", False, 0, "")
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    got, _ = Preprocess(rt, mean, std)(x, torch.zeros(2))
    want = v2.Normalize(mean, std)(x.float() / 255)
    assert torch.allclose(got, want, atol=1e-5)


def test_a_freeze_run_reuses_cached_features_and_gets_the_same_metrics(fast_overrides, store):
    cfg = compose_cfg(*fast_overrides, "strategy=freeze")
    train(cfg)
    train(cfg)
    client, (first, second) = runs(store)
    assert first.data.params["runtime.feature_cache"] == "miss"
    assert second.data.params["runtime.feature_cache"] == "hit"
    for key in ("train_loss", "val_loss", "val_acc"):
        assert history(client, first.info.run_id, key) == history(client, second.info.run_id, key)


def test_changed_data_invalidates_the_feature_cache(fast_overrides, tiny_data, store):
    cfg = compose_cfg(*fast_overrides, "strategy=freeze")
    train(cfg)
    make_image_folder(tiny_data, n_train=9, n_val=4, seed=1)  # one more image per class
    train(cfg)
    _, (first, second) = runs(store)
    assert second.data.params["runtime.feature_cache"] == "miss"
    assert second.data.params["data.train_images"] == "18"


def test_a_different_learning_rate_reuses_the_features(fast_overrides, store):
    train(compose_cfg(*fast_overrides, "strategy=freeze"))
    train(compose_cfg(*fast_overrides, "strategy=freeze", "optimizer.lr=0.05"))
    _, (_, second) = runs(store)
    assert second.data.params["runtime.feature_cache"] == "hit"


def test_views_add_augmented_copies_of_each_training_image(fast_overrides, store, private_cache):
    train(compose_cfg(*fast_overrides, "strategy=freeze", "strategy.feature_cache.views=3"))
    (cached,) = (private_cache / "tl" / "features").glob("*.pt")
    feats = features.load(cached)
    assert feats.train.shape[:2] == (3, 16) and feats.val.shape[0] == 8
    assert not torch.equal(feats.train[0], feats.train[1])


def test_feature_batches_cover_every_image_once_per_epoch():
    feats, targets = torch.randn(2, 10, 4), torch.arange(10)
    batches = list(features.FeatureBatches(feats, targets, 3, seed=0))
    assert len(batches) == 4
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(10))


def test_freeze_keeps_the_whole_backbone_in_eval_and_trains_the_head():
    cfg = compose_cfg("model=efficientnet_lite0", "model.pretrained=false", "strategy=freeze")
    b = backbones.attach_head(backbones.create(cfg.model), 3)
    plan = strategies.apply(b, cfg.strategy)
    strategies.set_train_mode(b.model, plan)
    assert b.model.classifier.training
    assert not any(m.training for n, m in b.model.named_modules() if n and n != "classifier")
    assert plan.head_dropout == b.model.drop_rate  # timm's own rate, moved to the head's input


def test_head_dropout_is_found_for_torchvision_heads():
    for preset, p in (("alexnet", 0.0), ("mobilenet_v3_small_scratch", 0.2)):
        cfg = compose_cfg(f"model={preset}", "model.pretrained=false", "strategy=freeze")
        b = backbones.attach_head(backbones.create(cfg.model), 3, cfg.model.get("stages"))
        assert strategies.head_dropout(b) == p, preset


def test_the_cpu_probe_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_MACHINE_CACHE", str(tmp_path))
    first = probe.cpu_choice("Test CPU", bf16_native=False)
    assert first["precision"] == "fp32" and set(first["rates"]) == {"fp32", "fp32+cl", "bf16", "bf16+cl"}
    assert probe.cache_file("Test CPU").is_file()
    assert probe.cpu_choice("Test CPU", bf16_native=False) == first
