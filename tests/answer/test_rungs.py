"""A trial stopped at a rung: FINISHED with where it stopped, its curve the exact prefix of the
same trial run straight to the end, and continued in its own run by `+resume`."""

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import compose_cfg
from tests.helpers.runs import CURVES
from tl.errors import ConfigError
from tl.tracking.readback import history
from tl.train import train
from tl.training import checkpoints, rungs

# Momentum and a learning rate that changes every epoch: state a continued trial must carry over.
RECIPE = ["model=resnet18_scratch", "strategy=finetune", "scheduler=step", "scheduler.decay_epochs=1",
          "trainer.epochs=3", "model.input_size=32", "trainer.batch_size=4", "trainer.num_workers=0"]


@pytest.fixture(scope="module")
def raced(tmp_path_factory):
    """The same trial run straight to the end, and stopped after epoch 1, continued to 2, then to the end."""
    from tests.conftest import make_image_folder

    tmp = tmp_path_factory.mktemp("rungs")
    store = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    base = ["dataset=imagefolder", f"dataset.root={make_image_folder(tmp / 'data')}", f"tracking.uri={store}",
            *RECIPE]
    straight = train(compose_cfg(*base)).run_id
    stopped = train(compose_cfg(*base, "trainer.stop_after=1")).run_id
    client = MlflowClient(store)
    at_rung_1 = client.get_run(stopped)
    curves_at_1 = {k: history(client, stopped, k) for k in CURVES}
    last_pt = (checkpoints.local_dir(at_rung_1.info.artifact_uri) / "checkpoints" / "last.pt").is_file()
    second = train(compose_cfg(f"+resume={stopped}", "trainer.stop_after=2", f"tracking.uri={store}")).run_id
    at_rung_2 = client.get_run(stopped)
    end = train(compose_cfg(f"+resume={stopped}", f"tracking.uri={store}")).run_id
    return {"client": client, "store": store, "straight": straight, "stopped": stopped, "at_1": at_rung_1,
            "curves_at_1": curves_at_1, "last_pt": last_pt, "second": second, "at_2": at_rung_2, "end": end}


def test_a_trial_stopped_at_a_rung_ends_finished_tagged_with_its_rung(raced):
    run = raced["at_1"]
    assert run.info.status == "FINISHED"
    assert run.data.tags[rungs.STOPPED_AT] == "1"
    assert "rung 1 of its 3-epoch schedule" in run.data.tags[rungs.STOP_REASON]
    assert raced["last_pt"], "a stopped trial keeps its resume point"


def test_a_stopped_trials_curve_is_the_prefix_of_the_same_trial_run_to_the_end(raced):
    client = raced["client"]
    for key in CURVES:
        full = history(client, raced["straight"], key)
        assert raced["curves_at_1"][key] == full[:1], key


def test_a_promoted_trial_continues_its_own_run_to_the_metrics_of_a_straight_run(raced):
    client = raced["client"]
    assert raced["second"] == raced["end"] == raced["stopped"]
    assert raced["at_2"].data.tags[rungs.STOPPED_AT] == "2"
    final = client.get_run(raced["stopped"])
    assert final.info.status == "FINISHED" and rungs.STOPPED_AT not in final.data.tags
    for key in CURVES:
        assert history(client, raced["stopped"], key) == history(client, raced["straight"], key), key
    assert final.data.metrics["best_val_acc"] == client.get_run(raced["straight"]).data.metrics["best_val_acc"]


def test_a_stopped_trial_cannot_continue_to_a_rung_it_has_passed(raced, tmp_path):
    # the fixture's trial has finished; a new stopped one is needed
    from tests.conftest import make_image_folder

    store = raced["store"]
    data = make_image_folder(tmp_path / "d2", n_train=4, n_val=2)
    rid = train(compose_cfg("dataset=imagefolder", f"dataset.root={data}", f"tracking.uri={store}", *RECIPE,
                            "trainer.stop_after=2")).run_id
    with pytest.raises(ConfigError, match="must be a later epoch"):
        train(compose_cfg(f"+resume={rid}", "trainer.stop_after=1", f"tracking.uri={store}"))
    assert raced["client"].get_run(rid).info.status == "FINISHED"


def test_a_finished_trial_that_ran_to_the_end_still_cannot_resume(raced):
    with pytest.raises(ConfigError, match="already FINISHED"):
        train(compose_cfg(f"+resume={raced['straight']}", f"tracking.uri={raced['store']}"))


def test_a_trial_without_test_evaluation_never_touches_the_test_split(tmp_path, store):
    from tests.conftest import make_image_folder

    data = make_image_folder(tmp_path / "d3", n_train=4, n_val=2)
    for cls in ("ants", "bees"):  # a test split of copies of val
        (data / "test" / cls).mkdir(parents=True)
        for f in (data / "val" / cls).iterdir():
            (data / "test" / cls / f.name).write_bytes(f.read_bytes())
    common = ["dataset=imagefolder", f"dataset.root={data}", f"tracking.uri={store}", *RECIPE, "trainer.epochs=1"]
    tested = train(compose_cfg(*common))
    untested = train(compose_cfg(*common, "trainer.evaluate_test=false"))
    client = MlflowClient(store)
    assert tested.test_acc is not None and "test_acc" in client.get_run(tested.run_id).data.metrics
    assert untested.test_acc is None and "test_acc" not in client.get_run(untested.run_id).data.metrics
