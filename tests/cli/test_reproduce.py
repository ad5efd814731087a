"""`tl reproduce RUN_ID` trains a logged run again from its recomposed config and proves every
per-epoch metric matches; a run it cannot reproduce fails, naming what differs."""

from pathlib import Path

import pytest

from tl.cli.main import main as tl_command
from tl.cli.reproduce import Difference, config_differences, environment_warnings, metric_differences
from tl.tracking import store as mlflow_store

pytestmark = pytest.mark.slow  # end to end: whole sweeps in subprocesses


def test_reproducing_a_run_gives_identical_metrics_and_exits_0(tiny_sweep, capsys):
    original = tiny_sweep.jobs["finetune"].info.run_id
    assert tl_command(["reproduce", original, "--tracking-uri", tiny_sweep.uri]) == 0
    out = capsys.readouterr().out
    assert "equal to the logged config.yaml" in out
    assert "Reproduced: every per-epoch metric is identical" in out and "tolerance 0 (exact)" in out
    (new,) = tiny_sweep.client.search_runs([tiny_sweep.experiment_id],
                                           filter_string=f"tags.`tl.reproduces` = '{original}'")
    assert new.info.run_id != original and new.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in new.data.tags  # a run of its own, not a job of the sweep


def test_a_run_whose_logged_config_was_edited_is_refused_naming_the_key(tiny_sweep, tmp_path, capsys):
    # The mistake: someone "fixes" a run's learning rate in its stored config.yaml afterwards.
    client, run_id = tiny_sweep.client, tiny_sweep.jobs["freeze"].info.run_id
    config = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path)))
    logged_lr = tiny_sweep.jobs["freeze"].data.params["optimizer.lr"]
    text = config.read_text()
    assert f"  lr: {logged_lr}\n" in text
    config.write_text(text.replace(f"  lr: {logged_lr}\n", "  lr: 0.5\n"))
    client.log_artifact(run_id, str(config))

    assert tl_command(["reproduce", run_id, "--tracking-uri", tiny_sweep.uri]) == 2
    err = capsys.readouterr().err
    assert f"optimizer.lr: logged 0.5, recomposed {logged_lr}" in err
    assert not client.search_runs([tiny_sweep.experiment_id], filter_string=f"tags.`tl.reproduces` = '{run_id}'")


def test_an_unknown_run_id_says_where_to_find_one(tiny_sweep, capsys):
    assert tl_command(["reproduce", "0" * 32, "--tracking-uri", tiny_sweep.uri]) == 2
    assert "no run '000" in capsys.readouterr().err


def test_metric_differences_name_the_metric_and_epoch_beyond_the_tolerance():
    original = {"val_acc": [(1, 0.5), (2, 0.75)], "train_loss": [(1, 0.7), (2, 0.6)],
                "epoch_seconds": [(1, 3.0), (2, 2.0)]}
    reproduced = {"val_acc": [(1, 0.5), (2, 0.5)], "train_loss": [(1, 0.7 + 1e-9), (2, 0.6)],
                  "epoch_seconds": [(1, 9.0), (2, 9.0)]}
    assert metric_differences(original, reproduced, 0.0) == [
        Difference("train_loss", 1, 0.7, 0.7 + 1e-9), Difference("val_acc", 2, 0.75, 0.5)]
    assert metric_differences(original, reproduced, 1e-6) == [Difference("val_acc", 2, 0.75, 0.5)]
    assert "val_acc at epoch 2: original 0.75, reproduced 0.5" in Difference("val_acc", 2, 0.75, 0.5).describe()


def test_an_epoch_missing_from_one_run_is_a_difference():
    assert metric_differences({"lr": [(1, 0.1)]}, {"lr": [(1, 0.1), (2, 0.1)]}, 0.0) == [
        Difference("lr", 2, None, 0.1)]


def test_config_differences_name_each_key_and_ignore_where_the_run_logged_to():
    logged = {"optimizer": {"lr": 0.01}, "tracking": {"uri": "sqlite:///a.db"}, "trainer": {"seed": 1}}
    recomposed = {"optimizer": {"lr": 0.001}, "tracking": {"uri": "http://127.0.0.1:5000"}}
    assert config_differences(logged, recomposed) == [
        "optimizer.lr: logged 0.01, recomposed 0.001", "trainer.seed: logged 1, recomposed (absent)"]


def test_a_different_commit_or_package_version_is_warned_about():
    tags = {"tl.git_commit": "0" * 40, "tl.version.torch": "1.0.0",
            **{f"tl.version.{k}": v for k, v in mlflow_store.package_versions().items() if k != "torch"}}
    warnings = environment_warnings(tags)
    assert any(w.startswith(f"the run was made at git commit {'0' * 40}") for w in warnings)
    assert any(w.startswith("torch was 1.0.0 for the run") for w in warnings)
    assert len(warnings) == 2
