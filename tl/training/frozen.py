"""One frozen pass of a backbone over a dataset, and what its features say before any training:
LogME and k-NN accuracy. Used by `tl rank` and by the answer's screen.

The pass goes through the `freeze` feature cache under the same key a `strategy=freeze` run of
the same config uses, so a later freeze run (or head-tuning grid) of that backbone reuses it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from tl.analysis import transferability
from tl.training import features, jobs
from tl.training.engine import Preprocess

KNN_K = 10


@dataclass
class Scores:
    logme: float
    knn_acc: float
    feature_cache: str  # hit | miss
    seconds: float      # the frozen pass (or cache read) and the scoring


def frozen_features(cfg):
    """The frozen backbone's features of `cfg`'s data, from the freeze feature cache or computed
    into it, exactly as a `strategy=freeze` run of the same config would (the same start:
    `jobs.start`). Returns (features, backbone, hit|miss)."""
    rt, _, backbone = jobs.start(cfg)
    model = backbone.model.to(rt.device)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    feats, state, _ = features.obtain(cfg, backbone, rt, Preprocess(rt, backbone.data.mean, backbone.data.std))
    return feats, backbone, state


def score(cfg, k: int = KNN_K) -> Scores:
    """LogME of the train features (view 0: the plain crop) and k-NN accuracy from train to val."""
    start = time.perf_counter()
    feats, _, state = frozen_features(cfg)
    train_x, train_y = feats.train[0].numpy(), feats.train_targets.numpy()
    logme = transferability.logme(train_x, train_y)
    knn = transferability.knn_accuracy(train_x, train_y, feats.val.numpy(), feats.val_targets.numpy(), k)
    return Scores(logme, knn, state, time.perf_counter() - start)
