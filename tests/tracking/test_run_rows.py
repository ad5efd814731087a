"""A sweep's runs read back as rows: the one place that decides a logged run's backbone identity
(source, name, weights, pretrained or scratch) and dataset identity (content and the settings
that decide its splits), and that reads a NaN metric as missing, with the reason."""

import math

import pytest

from tests.helpers.logged_sweeps import Job, log_sweep
from tl.tracking import runs


def collect(store, jobs, **kw):
    client, parent, ids = log_sweep(store, jobs)
    exp = client.get_run(parent).info.experiment_id
    by_id = {r.run_id: r for r in runs.collect(client, parent, exp)}
    return client, [by_id[i] for i in ids]


@pytest.mark.parametrize("tags, params, scratch", [
    ({"tl.pretrained": "false"}, {}, True),
    ({"tl.pretrained": "no"}, {"model.pretrained": "True"}, True),  # the tag decides where there is one
    ({"tl.pretrained": "true"}, {"model.pretrained": "False"}, False),
    ({}, {"model.pretrained": "False"}, True),  # runs logged before the tag
    ({}, {"model.pretrained": "0"}, True),
    ({}, {"model.pretrained": "False", "model.weights": "/w/mine.pt"}, False),  # a weights file
    ({}, {}, False),
])
def test_whether_a_backbone_started_from_scratch_is_decided_in_one_place(tags, params, scratch):
    b = runs.backbone({"tl.model": "resnet18", **tags}, params)
    assert (b.pretrained, b.label, b.rank_key) == (
        (False, "resnet18 (scratch)", "resnet18.scratch") if scratch else (True, "resnet18", "resnet18"))


def test_torchvision_and_timm_resnet18_read_back_as_two_labelled_backbones(store):
    client, rows = collect(store, [Job("resnet18", "finetune", 0.9, seed=s) for s in (0, 1, 0, 1)])
    for r, (source, weights) in zip(rows, [("torchvision", "IMAGENET1K_V1")] * 2 + [("timm", "timm:a1_in1k")] * 2):
        client.log_param(r.run_id, "model.source", source)
        client.set_tag(r.run_id, "tl.weights", weights)
    parent = client.get_run(rows[0].run_id).data.tags["mlflow.parentRunId"]
    got = runs.collect(client, parent, client.get_run(parent).info.experiment_id)
    assert sorted({(r.model, r.backbone) for r in got}) == [
        ("resnet18 [timm]", "timm:resnet18:timm:a1_in1k"),
        ("resnet18 [torchvision]", "torchvision:resnet18:IMAGENET1K_V1")]


def test_runs_with_other_split_settings_are_another_dataset(store):
    def job(acc, limit="None", split_seed="0"):
        return Job("lite0", "freeze", acc, data_id="pets-1111aaaa",
                   extra={"dataset.limit_per_class": limit, "dataset.split_seed": split_seed})

    _, rows = collect(store, [job(0.9), job(0.8, limit="10"), job(0.7, split_seed="3"), job(0.6)])
    assert len({r.data_key for r in rows}) == 3 and rows[0].data_key == rows[3].data_key
    assert [r.dataset for r in rows[:3]] == ["pets-1111aaaa [limit_per_class=None split_seed=0]",
                                             "pets-1111aaaa [limit_per_class=10 split_seed=0]",
                                             "pets-1111aaaa [limit_per_class=None split_seed=3]"]


def test_splits_drawn_with_the_seed_stay_one_dataset(store):
    _, rows = collect(store, [Job("lite0", "freeze", 0.9, seed=s, data_id="pets-1111aaaa",
                                  extra={"dataset.split_seed": str(s)}) for s in (0, 1, 2)])
    assert len({r.data_key for r in rows}) == 1 and [r.split_seed for r in rows] == ["0", "1", "2"]


def test_a_nan_metric_reads_as_missing_with_the_reason(store):
    client, rows = collect(store, [Job("lite0", "freeze", 0.9), Job("lite0", "finetune", 0.5)])
    client.log_metric(rows[1].run_id, "best_val_acc", math.nan, step=5)
    parent = client.get_run(rows[0].run_id).data.tags["mlflow.parentRunId"]
    got = {r.run_id: r for r in runs.collect(client, parent, client.get_run(parent).info.experiment_id)}
    bad = got[rows[1].run_id]
    assert bad.best_val_acc is None and bad.error == "best_val_acc is nan"
    assert got[rows[0].run_id].error == ""


def test_a_cache_hit_is_read_with_the_backbone_pass_it_reused(store):
    client, rows = collect(store, [Job("lite0", "freeze", 0.9, train_seconds=0.5, total_seconds=1.5)])
    client.set_tag(rows[0].run_id, "tl.feature_cache", "hit")
    client.log_metric(rows[0].run_id, "feature_pass_seconds", 17.0)
    parent = client.get_run(rows[0].run_id).data.tags["mlflow.parentRunId"]
    (r,) = runs.collect(client, parent, client.get_run(parent).info.experiment_id)
    assert (r.feature_cache, r.cost_alone) == ("hit", 18.5)
