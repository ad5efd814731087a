"""The benchmark's verdicts are arithmetic on its measurements: check the arithmetic."""

import pytest

from tl.bench import report


def tl_result(ips, acc=0.9, wall=10.0, cache="off", mb=100.0, n=1):
    run = {"best_val_acc": acc, "epoch_images_per_second": ips, "feature_cache": cache,
           "image_cache_mb": mb, "precision": "bf16", "channels_last": "True"}
    return {"runs": [run] * n, "wall_seconds": wall, "peak_rss_mb": 1000.0}


def results():
    return {
        "cpu": "test cpu", "data": "d", "epochs": 3, "freeze_epochs": 25,
        "ceiling_r18": {"epoch_images_per_second": 100.0, "precision": "bf16", "wall_seconds": 5.0,
                        "peak_rss_mb": 900.0},
        "baseline_r18_finetune": {"images_per_epoch": 400, "epoch_seconds": [10.0, 8.0, 12.0],
                                  "best_val_acc": 0.7, "wall_seconds": 40.0, "peak_rss_mb": 800.0},
        "tl_r18_finetune": tl_result(90.0),
        "tl_r18_partial": tl_result(120.0),
        "tl_r18_finetune_cap": tl_result(60.0, mb=19.9),
        "baseline_lite0_freeze": {"images_per_epoch": 400, "epoch_seconds": [8.0] * 25,
                                  "best_val_acc": 0.967, "wall_seconds": 300.0, "peak_rss_mb": 800.0},
        "tl_lite0_freeze": tl_result(1e5, acc=0.95, wall=10.0, cache="miss"),
        "tl_lite0_freeze_lr_sweep": tl_result(1e5, acc=0.95, wall=16.0, cache="hit", n=5),
    }


def test_targets_are_ratios_of_this_runs_measurements():
    t = {x["target"]: x for x in report.targets(results())}
    assert t["resnet18 finetune epoch throughput, tl / tutorial"]["value"] == 90.0 / 40.0  # 400 / median 10 s
    assert t["resnet18 finetune epoch throughput, tl / compute ceiling"]["value"] == 0.9
    assert t["partial_freeze (3 of 5 stages) / finetune throughput"]["value"] == 120.0 / 90.0
    assert t["lite0 freeze end to end, tutorial / tl"]["value"] == 30.0
    assert t["lite0 freeze end to end, tutorial / tl"]["met"]


def test_a_missed_target_is_marked_and_accuracy_loss_counts_against_tl():
    t = {x["target"]: x for x in report.targets(results())}
    assert t["lite0 freeze best val acc, tl - tutorial"]["value"] < -0.01
    assert not t["lite0 freeze best val acc, tl - tutorial"]["met"]
    assert not t["5-run lr sweep / one run, wall"]["met"]  # 16 s / 10 s
    assert not t["seconds per further run of the sweep"]["met"]  # 1.5 s each, 0.75 s allowed
    assert "| NO |" in report.markdown(results())


def test_runs_on_cached_features_report_no_image_rate():
    rows = {r["measurement"]: r for r in report.rows(results())}
    assert rows["tl_lite0_freeze"]["epoch_img_s"] is None
    assert "0 miss, 5 hit" in rows["tl_lite0_freeze_lr_sweep"]["note"]
    assert rows["tl_r18_finetune"]["epoch_img_s"] == 90.0


def test_a_sweep_within_1_3x_of_one_run_meets_its_target():
    res = {**results(), "tl_lite0_freeze_lr_sweep": tl_result(1e5, wall=12.5, cache="hit", n=5)}
    t = {x["target"]: x for x in report.targets(res)}
    assert t["5-run lr sweep / one run, wall"]["value"] == 1.25 and t["5-run lr sweep / one run, wall"]["met"]
    assert t["seconds per further run of the sweep"]["value"] == 2.5 / 4
    assert t["seconds per further run of the sweep"]["goal"] == "<= 0.75"


def test_the_automatic_precision_is_held_to_fp32_accuracy_and_speed():
    res = {**results(), "tl_lite0_freeze": tl_result(1e5, acc=0.95, wall=10.0, cache="miss"),
           "tl_lite0_freeze_fp32": tl_result(1e5, acc=0.97, wall=12.0, cache="miss")}
    t = {x["target"]: x for x in report.targets(res)}
    acc = t["lite0 freeze best val acc, bf16 (auto) - fp32"]
    assert acc["value"] == pytest.approx(-0.02) and not acc["met"]
    speed = t["lite0 freeze end to end, fp32 / bf16 (auto)"]
    assert speed["value"] == 1.2 and speed["met"]


def epoch_result(seconds, wall=20.0):
    return {**tl_result(100.0, wall=wall), "runs": [{**tl_result(100.0)["runs"][0], "epoch_seconds": [seconds]}]}


def test_the_screen_is_its_grid_runs_wall_against_one_head_per_backbone():
    grid = tl_result(1e5, wall=15.0, cache="miss", n=3)
    grid["runs"] = [{**r, "head_grid_size": 16} for r in grid["runs"]]
    res = {**results(), "tl_screen_one_head": tl_result(1e5, wall=12.0, cache="miss", n=3), "tl_screen_grid16": grid}
    t = {x["target"]: x for x in report.targets(res)}
    screen = t["screen: 3 backbones x 16 heads / one freeze run each, wall"]
    assert screen["value"] == 1.25 and screen["met"]
    assert "48 heads in all" in {r["measurement"]: r for r in report.rows(res)}["tl_screen_grid16"]["note"]


def test_a_neighbour_slowdown_is_epoch_seconds_beside_it_over_alone():
    res = {**results(), "tl_epoch_alone": epoch_result(10.0), "tl_epoch_beside_neighbour": epoch_result(30.0)}
    t = {x["target"]: x for x in report.targets(res)}
    beside = t["tl epoch beside a CPU-bound neighbour / alone"]
    assert beside["value"] == 3.0 and not beside["met"]


def test_the_wait_policy_is_held_on_every_core_beside_the_neighbour_spinning_against_passive():
    res = {**results(), "tl_epoch_beside_neighbour_every_core": epoch_result(30.0),
           "tl_epoch_beside_neighbour_spinning": epoch_result(90.0)}
    row = {x["target"]: x for x in report.targets(res)}["beside the neighbour on every core: spinning / passive OpenMP waits"]
    assert row["value"] == 3.0 and row["met"]


def test_a_continued_trial_reports_its_seconds_before_the_first_epoch():
    res = {**results(), "tl_continue_trial": {"continue_wall_seconds": 5.0, "continue_overhead_seconds": 0.4,
                                              "parts": {"store": 0.1, "checkpoint": 0.05, "epochs": 4.0},
                                              "best_val_acc": 0.9, "wall_seconds": 30.0, "peak_rss_mb": 900.0}}
    t = {x["target"]: x for x in report.targets(res)}
    assert t["continued trial: seconds before its first epoch"]["met"]
    note = {r["measurement"]: r for r in report.rows(res)}["tl_continue_trial"]["note"]
    assert "0.40 s before its first epoch" in note and "store 0.10" in note and "epochs" not in note.split("(")[1]


def test_the_ceiling_runs_epochs_of_the_runs_shape_and_reports_their_median_rate():
    import torch
    from torch import nn

    from tl.bench import ceiling
    from tl.runtime.machine import Runtime

    calls = {"train": 0, "eval": 0}
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    net.register_forward_hook(lambda m, a, o: calls.__setitem__("train" if m.training else "eval",
                                                               calls["train" if m.training else "eval"] + 1))
    rt = Runtime(device=torch.device("cpu"), precision="fp32", precision_reason="test", channels_last=False,
                 num_workers=0, cpu="test")
    c = ceiling.measure(net, rt, n_train=5, n_val=3, epochs=2, batch=2, size=8)
    assert calls == {"train": 1 + 2 * 3, "eval": 1 + 2 * 2}  # a warm-up each, then ceil(n / batch) per epoch
    assert c["epoch_images_per_second"] > 0 and c["train_images_per_second"] > 0


def test_repeated_rows_keep_their_median_run_and_the_sweep_is_judged_pair_by_pair():
    # Three turns on a drifting machine: the sweep over the single run beside it each time.
    one = {**tl_result(1e5, acc=0.95, wall=11.0, cache="miss"), "walls": [10.0, 11.0, 14.0]}
    sweep = {**tl_result(1e5, wall=13.0, cache="hit", n=5), "walls": [12.0, 13.0, 19.6],
             "ratios": [1.2, 13.0 / 11.0, 1.4]}
    t = {x["target"]: x for x in report.targets({**results(), "tl_lite0_freeze": one, "tl_lite0_freeze_lr_sweep": sweep})}
    assert t["5-run lr sweep / one run, wall"]["value"] == 1.2 and t["5-run lr sweep / one run, wall"]["met"]
    assert t["lite0 freeze end to end, tutorial / tl"]["value"] == 300.0 / 11.0
    note = {r["measurement"]: r for r in report.rows({**results(), "tl_lite0_freeze": one})}["tl_lite0_freeze"]["note"]
    assert note.endswith("median of 10.0, 11.0, 14.0 s")


def test_throughput_ratios_taken_in_turns_are_the_median_of_each_turns_ratio():
    # The machine slows between turns: each turn's tl / ceiling holds, a ratio across turns would not.
    ceiling = {**results()["ceiling_r18"], "walls": [5.0, 9.0, 6.0], "rates": [100.0, 50.0, 80.0]}
    finetune = {**tl_result(90.0), "walls": [20.0, 36.0, 24.0], "rates": [90.0, 44.0, 70.0]}
    partial = {**tl_result(60.0), "walls": [15.0, 27.0, 18.0], "rates": [120.0, 60.0, 91.0]}
    res = {**results(), "ceiling_r18": ceiling, "tl_r18_finetune": finetune, "tl_r18_partial": partial}
    t = {x["target"]: x for x in report.targets(res)}
    assert t["resnet18 finetune epoch throughput, tl / compute ceiling"]["value"] == 0.88  # 0.9, 0.88, 0.875
    assert t["partial_freeze (3 of 5 stages) / finetune throughput"]["value"] == 120.0 / 90.0  # 1.333, 1.364, 1.3
    note = {r["measurement"]: r for r in report.rows(res)}["ceiling_r18"]["note"]
    assert note.endswith("median of 5.0, 9.0, 6.0 s")


def test_a_throughput_ratio_of_single_runs_is_their_own_rates():
    t = {x["target"]: x for x in report.targets(results())}
    assert t["resnet18 finetune epoch throughput, tl / compute ceiling"]["value"] == 0.9
    assert t["partial_freeze (3 of 5 stages) / finetune throughput"]["value"] == 120.0 / 90.0
