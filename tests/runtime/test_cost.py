"""A run's whole cost is logged (`total_seconds`, from the job's start), and a rate is named
for what it counts: a head trained on cached features reports no image rate."""

import subprocess
import sys

from mlflow.tracking import MlflowClient

from tests.conftest import compose_cfg
from tl.runtime import cost
from tl.train import train


def only_run(store):
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("tl").experiment_id])
    return client, run


def test_process_start_counts_the_time_before_tl_was_imported():
    code = ("import time; time.sleep(1.0); from tl.runtime import cost; "
            "print(time.perf_counter() - cost.process_start())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 1.0 <= float(out.stdout) < 30


def test_a_run_logs_total_seconds_covering_setup_and_training(fast_overrides, store):
    train(compose_cfg(*fast_overrides, "strategy=finetune"))
    client, run = only_run(store)
    m = run.data.metrics
    assert m["total_seconds"] > m["train_seconds"] + m["setup_seconds"]
    assert [h.step for h in client.get_metric_history(run.info.run_id, "total_seconds")] == [2]


def test_a_head_on_cached_features_logs_feature_rates_not_image_rates(fast_overrides, store):
    train(compose_cfg(*fast_overrides, "strategy=freeze"))
    client, run = only_run(store)
    assert run.data.params["runtime.feature_cache"] == "miss"
    assert {"features_per_second", "train_features_per_second"} <= set(run.data.metrics)
    assert not {"images_per_second", "train_images_per_second"} & set(run.data.metrics)


def test_runs_on_images_log_image_rates(fast_overrides, store):
    train(compose_cfg(*fast_overrides, "strategy=partial_freeze", "trainer.epochs=1"))
    _, run = only_run(store)
    assert {"images_per_second", "train_images_per_second"} <= set(run.data.metrics)
    assert "features_per_second" not in run.data.metrics


def test_rate_names():
    assert cost.rate_names(True) == ("features_per_second", "train_features_per_second")
    assert cost.rate_names(False) == ("images_per_second", "train_images_per_second")
