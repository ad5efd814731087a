"""A run logs where its wall-clock time went, phase by phase, as `setup_seconds.<part>`."""

from mlflow.tracking import MlflowClient

from tests.conftest import compose_cfg
from tl.runtime import timeline
from tl.train import train

PARTS = {"store", "model", "epochs", "diagnostics", "exit", "other"}


def test_a_run_logs_each_phase_of_its_wall_clock_time_within_its_total(fast_overrides, store):
    run_id = train(compose_cfg(*fast_overrides, "strategy=freeze")).run_id
    metrics = MlflowClient(store).get_run(run_id).data.metrics
    parts = {k.removeprefix("setup_seconds."): v for k, v in metrics.items() if k.startswith("setup_seconds.")}
    assert PARTS | {"features"} <= set(parts) and "data" not in parts  # the images went through the cache
    assert all(v >= 0 for v in parts.values())
    assert sum(v for k, v in parts.items() if k != "imports") <= metrics["total_seconds"] + 1e-6


def test_an_image_run_times_its_data_instead_of_features(fast_overrides, store):
    run_id = train(compose_cfg(*fast_overrides, "strategy=finetune", "trainer.epochs=1")).run_id
    metrics = MlflowClient(store).get_run(run_id).data.metrics
    assert metrics["setup_seconds.data"] > 0 and "setup_seconds.features" not in metrics


def test_a_part_timed_twice_adds_up_in_the_trace():
    trace = timeline.begin()
    for _ in range(2):
        with timeline.part("epochs"):
            pass
    assert set(trace.seconds) == {"epochs"} and trace.metrics()["setup_seconds.epochs"] >= 0
