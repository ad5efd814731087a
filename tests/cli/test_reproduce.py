"""`tl reproduce RUN_ID` trains a logged run again from its recomposed config and proves every
per-epoch metric matches; a run it cannot reproduce fails, naming what differs."""

from pathlib import Path

import pytest

from tl.cli.main import main as tl_command
from tl.training.reproduce import Difference, config_differences, environment_warnings, metric_differences, refusals
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


# A run's record is editable by anyone who may edit its experiment: only what conf/ can say is rerun.

def _save_overrides(client, run_id: str, overrides: list[str], tmp_path: Path) -> None:
    import yaml

    folder = tmp_path / "hydra"
    folder.mkdir()
    (folder / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    client.log_artifact(run_id, str(folder / "overrides.yaml"), "hydra")


def test_saved_overrides_with_an_env_interpolation_are_refused_and_no_run_is_made(tiny_sweep, tmp_path,
                                                                                  capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "reproducers-own-secret")
    client = tiny_sweep.client
    run = tiny_sweep.jobs["freeze"]
    saved = Path(client.download_artifacts(run.info.run_id, "hydra/overrides.yaml", str(tmp_path / "dl")))
    import yaml

    planted = "+x=${oc.env:MLFLOW_TRACKING_PASSWORD}"
    # A copy of the run, so the shared sweep's runs stay as they were.
    copy = client.create_run(tiny_sweep.experiment_id, tags={"tl.overrides": run.data.tags["tl.overrides"]})
    client.log_artifact(copy.info.run_id, client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path)))
    _save_overrides(client, copy.info.run_id, [*yaml.safe_load(saved.read_text()), planted], tmp_path)
    client.set_terminated(copy.info.run_id, "FINISHED")

    assert tl_command(["reproduce", copy.info.run_id, "--tracking-uri", tiny_sweep.uri]) == 2
    captured = capsys.readouterr()
    assert f"{planted}: holds an interpolation" in captured.err
    assert "reproducers-own-secret" not in captured.out + captured.err
    assert not client.search_runs([tiny_sweep.experiment_id],
                                  filter_string=f"tags.`tl.reproduces` = '{copy.info.run_id}'")


def test_an_interpolation_as_a_sweeper_escapes_it_is_refused_too():
    (why,) = refusals([r"+x=$\{oc.env\:HOME\}"])
    assert "holds an interpolation" in why


def test_a_download_moved_to_another_source_checksum_and_folder_is_refused_naming_each(tmp_path):
    moved = ["dataset=hymenoptera", "dataset.url=https://attacker.example.org/h.zip",
             "dataset.content_sha256=null", f"dataset.root={tmp_path / 'not-yet-there'}"]
    refused = refusals(moved)
    assert len(refused) == 3
    assert refused[0].startswith("dataset.url=https://attacker.example.org/h.zip: changes the hymenoptera "
                                 "dataset's download")
    assert refused[1].startswith("dataset.content_sha256=null: changes the hymenoptera dataset's download")
    assert "tl would download or write the hymenoptera dataset there" in refused[2]


def test_a_folder_for_a_dataset_tl_writes_itself_is_refused_unless_it_is_conf_s():
    assert refusals(["dataset=digits", "dataset.root=/home"]) != []
    assert refusals(["dataset=digits", "dataset.root=data/digits"]) == []


def test_a_downloaded_dataset_already_in_another_folder_is_read_there(tmp_path):
    assert refusals(["dataset=hymenoptera", f"dataset.root={tmp_path}"]) == []


def test_an_image_folder_anywhere_and_ordinary_overrides_are_accepted(tmp_path):
    assert refusals(["dataset=imagefolder", f"dataset.root={tmp_path}", "model=resnet18",
                     "optimizer.lr=0.01", "+trainer.extra=1"]) == []


@pytest.mark.parametrize("override", ["hydra/launcher=joblib", "+hydra.callbacks.x._target_=os.getcwd",
                                      "hydra.job.env_set.X=1"])
def test_overrides_of_hydra_itself_are_refused(override):
    (why,) = refusals([override])
    assert why.startswith(f"{override}: changes Hydra itself")
