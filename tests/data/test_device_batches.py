"""Batches from tensors on the device: the same crops torchvision would draw, in one call."""

import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient

from tests.conftest import compose_cfg
from tl.data.device_batches import DeviceTrainBatches, TensorBatches, random_boxes
from tl.train import train


def test_random_boxes_follow_random_resized_crop_rules():
    hw = torch.tensor([[375, 500], [500, 375], [64, 64], [10, 400]])
    boxes = random_boxes(hw.repeat(50, 1), generator=torch.Generator().manual_seed(0))
    h, w = hw.repeat(50, 1).float().unbind(1)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    frac = bw * bh / (w * h)
    normal = w < 4 * h  # the 10x400 strip has no valid crop: centre-crop fallback
    assert (frac <= 1.0 + 1e-6).all() and (frac[normal] >= 0.07).all()
    ratio = bw / bh
    assert ((ratio[normal] > 0.7) & (ratio[normal] < 1.4)).all()


def test_whole_image_crops_equal_a_plain_resize():
    ramp = torch.linspace(0, 255, 32)
    img = torch.stack([ramp[None, :].expand(32, 32), ramp[:, None].expand(32, 32), 255 - ramp[None, :].expand(32, 32)]).to(torch.uint8)
    batches = DeviceTrainBatches([img], [0], side=32, out_size=16, batch_size=1, device=torch.device("cpu"),
                                 seed=0, scale=(1.0, 1.0), hflip=False)
    (x, _), = list(batches)
    want = F.interpolate(img[None].float(), size=16, mode="bilinear", antialias=True)
    assert x.dtype == torch.uint8 and x.shape == (1, 3, 16, 16)
    assert (x.float() - want).abs().max() <= 3


def test_device_batches_cover_every_image_once_and_repeat_with_the_seed():
    imgs = [torch.randint(0, 256, (3, 20 + i, 30), dtype=torch.uint8) for i in range(7)]

    def epoch(seed):
        b = DeviceTrainBatches(imgs, list(range(7)), 24, 16, 3, torch.device("cpu"), seed)
        return list(b)

    a, b = epoch(1), epoch(1)
    assert sorted(torch.cat([y for _, y in a]).tolist()) == list(range(7))
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, b))


def test_tensor_batches_keep_order_without_a_generator():
    x, y = torch.zeros(5, 3, 4, 4, dtype=torch.uint8), torch.arange(5)
    assert torch.cat([t for _, t in TensorBatches(x, y, 2)]).tolist() == [0, 1, 2, 3, 4]


def test_a_run_can_augment_on_the_device(fast_overrides, store):
    train(compose_cfg(*fast_overrides, "trainer.device_augment=true"))
    client = MlflowClient(store)
    run = client.search_runs([client.get_experiment_by_name("tl").experiment_id])[0]
    assert run.info.status == "FINISHED" and run.data.params["trainer.device_augment"] == "True"
