"""`tl rank` end to end on small data: scores per backbone, a failing backbone reported in its
row, the ranking logged as an MLflow run, the freeze feature cache shared both ways; and
`tl compare`'s check that the ranking held."""

import contextlib
import io
import re

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import compose_cfg, make_image_folder
from tl.analysis import agreement
from tl.cli import compare
from tl.cli import rank as rank_command
from tl.cli.main import main as tl_command
from tl.errors import ConfigError
from tl.tracking import store as mlflow_store
from tl.train import train
from tl.training import ranking as rank

SCRATCH = ["resnet18_scratch", "mobilenet_v3_small_scratch"]


def rank_args(tiny_data, store, models):
    return ["rank", "dataset=imagefolder", f"dataset.root={tiny_data}", "model.input_size=32",
            f"models=[{','.join(models)}]", f"tracking.uri={store}"]


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    """One ranking of two scratch backbones and a bad name, in its own store and feature cache."""
    tmp = tmp_path_factory.mktemp("rank")
    data, store = make_image_folder(tmp / "data"), f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    cache = f"strategy.feature_cache.dir={tmp / 'features'}"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = tl_command([*rank_args(data, store, [*SCRATCH, "no_such_model"]), cache, "--top-k", "1",
                         "--strategies", "finetune,lp_ft"])
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("tl").experiment_id])
    return code, out.getvalue(), client, run, data, store, cache


def test_rank_scores_every_backbone_and_reports_a_bad_one_in_its_row(ranked):
    code, out, *_ = ranked
    assert code == 0
    rows = {line.split()[1]: line for line in out.splitlines() if re.match(r"^[\d-] ", line)}
    assert set(rows) == {*SCRATCH, "no_such_model"}
    assert "ConfigError: no model preset 'no_such_model'" in rows["no_such_model"]
    assert rows["no_such_model"].startswith("-")
    for name in SCRATCH:
        assert re.search(r"\(scratch\)\s+-?\d+\.\d{4}\s+\d\.\d{4}\s+\d+\.\d\s+miss", rows[name]), rows[name]


def test_rank_ends_with_the_training_line_for_the_top_k(ranked):
    _, out, _, run, data, store, cache = ranked
    top = min(SCRATCH, key=lambda n: -run.data.metrics[f"logme.{n.split('_scratch')[0]}.scratch"])
    assert out.rstrip().splitlines()[-1].strip() == (
        f"tl-train -m model={top} strategy=finetune,lp_ft dataset=imagefolder dataset.root={data} "
        f"model.input_size=32 tracking.uri={store} {cache}")


def test_rank_is_logged_as_a_run_with_scores_chart_and_table(ranked):
    _, _, client, run, tiny_data, _, _ = ranked
    assert run.info.status == "FINISHED"
    assert run.data.tags["tl.kind"] == "rank"
    assert run.data.tags["tl.data_id"] == rank.data_id(compose_cfg("dataset=imagefolder", f"dataset.root={tiny_data}").dataset)
    assert re.fullmatch(r"data-[0-9a-f]{8}", run.data.tags["tl.data_id"])
    assert {"logme.resnet18.scratch", "knn_acc.resnet18.scratch", "logme.mobilenet_v3_small.scratch",
            "knn_acc.mobilenet_v3_small.scratch"} <= set(run.data.metrics)
    assert not any(k.startswith("logme.no_such") for k in run.data.metrics)
    files = {a.path for a in client.list_artifacts(run.info.run_id, "rank")}
    assert files == {"rank/table.md", "rank/scores.csv", "rank/scores.png"}


def test_a_freeze_run_after_rank_reuses_its_features(ranked):
    _, _, client, _, data, store, cache = ranked
    train(compose_cfg("dataset=imagefolder", f"dataset.root={data}", "model=resnet18_scratch", "model.input_size=32",
                      "strategy=freeze", cache, "trainer.epochs=1", "trainer.batch_size=4",
                      "trainer.num_workers=0", f"tracking.uri={store}"))
    (freeze_run,) = [r for r in client.search_runs([client.get_experiment_by_name("tl").experiment_id])
                     if r.data.tags.get("tl.strategy") == "freeze"]
    assert freeze_run.data.params["runtime.feature_cache"] == "hit"


def test_rank_after_a_freeze_run_reuses_its_features(fast_overrides, tiny_data, store, capsys):
    train(compose_cfg(*fast_overrides, "model=resnet18_scratch", "strategy=freeze"))
    assert tl_command(rank_args(tiny_data, store, ["resnet18_scratch"])) == 0
    assert re.search(r"resnet18_scratch .* hit$", capsys.readouterr().out, re.M)


def test_rank_with_no_backbone_scored_exits_1(tiny_data, store, capsys):
    assert tl_command(rank_args(tiny_data, store, ["nope", "nada"])) == 1
    assert "No backbone could be scored" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["dataset=digits"], "tl rank needs models="),
    (["models=[]"], "models= is empty"),
    (["models=[a,a]"], "models= names a more than once"),
    (["models=[a]", "strategy=finetune"], "strategy=finetune: tl rank sets model= "),
    (["models=[a]", "dataset=nowhere"], "the overrides dataset=nowhere do not compose: "),
    (["models=[a]", "trainer.epoch=3"], "the overrides trainer.epoch=3 do not compose: "),
])
def test_bad_rank_arguments_are_refused(args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        rank_command.run(args, None, 3, ["finetune"])


def test_agreement_is_the_spearman_correlation_over_the_backbones_both_have():
    scores = {"a": 1.0, "b": 0.5, "c": 0.2, "d": 0.9}
    assert agreement.agreement(scores, {"a": 0.9, "b": 0.8, "c": 0.1}) == \
        "best val acc: Spearman +1.00 over 3 backbones (a, b, c)"
    assert "Spearman -1.00" in agreement.agreement(scores, {"a": 0.1, "b": 0.8, "c": 0.9})
    assert "a rank correlation needs at least 3" in agreement.agreement(scores, {"a": 0.9, "b": 0.8})


def test_compare_shows_whether_the_ranking_held_for_a_sweep_on_the_same_data(tiny_data, store, capsys):
    client = mlflow_store.prepare_store(store)
    exp = mlflow_store.experiment_id(client, "tl", store)
    did = rank.data_id(compose_cfg("dataset=imagefolder", f"dataset.root={tiny_data}").dataset)
    ranking = client.create_run(exp, tags={"tl.kind": "rank", "tl.data_id": did}).info.run_id
    mlflow_store.log_metrics(client, ranking, {"logme.m1": 0.9, "logme.m2": 0.5, "logme.m3.scratch": 0.1,
                                           "knn_acc.m1": 0.9, "knn_acc.m2": 0.95, "knn_acc.m3.scratch": 0.5}, step=0)
    client.set_terminated(ranking)
    parent = client.create_run(exp, tags={"tl.role": "sweep"}).info.run_id
    for model, pretrained, acc in (("m1", True, 0.95), ("m2", True, 0.90), ("m3", False, 0.6)):
        child = client.create_run(exp, tags={"mlflow.parentRunId": parent, "tl.model": model,
                                             "tl.strategy": "finetune", "tl.dataset": "imagefolder"}).info.run_id
        mlflow_store.log_params(client, child, {"model.pretrained": pretrained, "dataset.name": "imagefolder",
                                            "dataset.root": str(tiny_data)})
        mlflow_store.log_metrics(client, child, {"best_val_acc": acc}, step=1)
        client.set_terminated(child)
    client.set_terminated(parent)
    assert compare.run(store, "tl", parent, None) == 0
    out = capsys.readouterr().out
    assert f"Does the ranking hold? tl rank run {ranking} scored this data ({did}):" in out
    assert "LogME vs finetune best val acc: Spearman +1.00 over 3 backbones (m1, m2, m3.scratch)" in out
    assert "k-NN acc vs finetune best val acc: Spearman +0.50 over 3 backbones" in out


def test_compare_says_nothing_of_rankings_when_none_was_made_on_the_sweeps_data(tiny_sweep, capsys):
    compare.run(tiny_sweep.uri, "tl", tiny_sweep.parent.info.run_id, None)
    assert "Does the ranking hold?" not in capsys.readouterr().out


def test_a_rank_run_that_fails_while_logging_ends_failed_with_its_error(tiny_data, store, monkeypatch):
    def broken_chart(scores, path):
        raise OSError("disk full")

    monkeypatch.setattr(rank, "_chart", broken_chart)
    scores = [rank.Score("resnet18_scratch", "resnet18", False, 0.5, 0.75, 1.0, "miss")]
    base = rank.compose(None, ["dataset=imagefolder", f"dataset.root={tiny_data}"])
    with pytest.raises(OSError, match="disk full"):
        rank.log_run(store, "tl", scores, base.dataset, "data-x", ["table"], None, ["rank"])
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("tl").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["tl.error"] == "OSError: disk full"


def test_the_frozen_pass_starts_as_a_run_does(tiny_data, monkeypatch):
    """`tl rank`'s frozen pass begins with the training job's own start (checks, threads,
    runtime, seeds, backbone), not a copy of it."""
    from tl.training import frozen, jobs

    started = []
    real = jobs.start
    monkeypatch.setattr(jobs, "start", lambda cfg: started.append(cfg.model.name) or real(cfg))
    cfg = compose_cfg("model=resnet18_scratch", "strategy=freeze", "dataset=imagefolder", f"dataset.root={tiny_data}",
                      "model.input_size=32")
    scores = frozen.score(cfg)
    assert started == ["resnet18"]
    assert 0.0 <= scores.knn_acc <= 1.0 and scores.feature_cache == "miss"
