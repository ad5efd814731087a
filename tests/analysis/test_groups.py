"""Which runs are replicates of one configuration, which is best, and what each costs: groups
keyed by the backbone's identity (not its name), ties settled by cost, one seed counted once,
cost as if each run had been alone, missing or NaN metrics listed instead of crashing."""

import math

from tests.helpers.rows import run
from tl.analysis import groups, render


def analyse(rows):
    (ds,) = groups.analyse(rows).values()
    return ds


def test_two_backbones_with_one_name_are_two_groups_not_one_pooled_group():
    rows = [run("resnet18 [torchvision]", "finetune", s, 0.90 + s / 100, 100.0,
                backbone="torchvision:resnet18:IMAGENET1K_V1") for s in (0, 1, 2)]
    rows += [run("resnet18 [timm]", "finetune", s, 0.80 + s / 100, 100.0,
                 backbone="timm:resnet18:timm:a1_in1k") for s in (0, 1, 2)]
    ds = analyse(rows)
    assert [(g.model, g.acc.n, g.seeds) for g in ds.groups] == [
        ("resnet18 [torchvision]", 3, [0, 1, 2]), ("resnet18 [timm]", 3, [0, 1, 2])]


def test_a_repeated_seed_counts_once_and_is_reported_as_an_error():
    rows = [run("lite0", "freeze", s, acc, 10.0) for s, acc in ((0, 0.90), (0, 0.70), (1, 0.92))]
    ds = analyse(rows)
    (g,) = ds.groups
    assert g.acc.n == 2 and g.acc.mean == (0.80 + 0.92) / 2  # seed 0's two runs averaged, counted once
    assert g.duplicate_seeds == [0]
    assert len(ds.errors) == 1 and "lite0 + freeze ran seed 0 more than once" in ds.errors[0]
    assert render.group_table(ds)[1][0][0] == "*!"


def test_means_equal_up_to_rounding_are_a_tie_won_by_the_cheaper():
    rows = [run("vgg16", "finetune", 0, 0.8000000000000002, 300.0), run("vgg16", "freeze", 0, 0.7999999999999999, 10.0)]
    ds = analyse(rows)
    assert ds.best.strategy == "freeze"
    assert [g.on_front for g in ds.groups] == [True, False]  # the dearer tie is dominated


def test_an_exact_one_point_gap_is_within_one_point():
    rows = [run("vgg16", "finetune", 0, 5 / 100 + 0.9, 300.0), run("vgg16", "freeze", 0, 4 / 100 + 0.9, 10.0)]
    from tl.analysis import verdict

    assert any(line.startswith("Cheapest within 1 point of the best: vgg16 + freeze")
               for line in verdict.lines(analyse(rows)))


def test_a_cache_hit_costs_the_backbone_pass_it_reused():
    first = run("lite0", "freeze", 0, 0.90, 18.5, varied="optimizer.lr=0.001", feature_cache="miss")
    later = run("lite0", "freeze", 0, 0.91, 1.6, varied="optimizer.lr=0.008", feature_cache="hit",
                feature_pass_seconds=17.0)
    fine = run("lite0", "finetune", 0, 0.93, 212.2)
    ds = analyse([first, later, fine])
    cost = {g.varied: g.cost for g in ds.groups}
    assert cost["optimizer.lr=0.008"] == 1.6 + 17.0 and cost["optimizer.lr=0.001"] == 18.5
    assert any("reused cached backbone features" in n for n in ds.notes)
    header, body = render.table(groups.by_rank([first, later, fine], groups.analyse([first, later, fine])),
                                groups.analyse([first, later, fine]))
    assert "hit, +17.0 s pass" in [row[header.index("feature cache")] for row in body]


def test_without_the_cache_fields_the_cost_is_total_seconds():
    r = run("lite0", "freeze", 0, 0.9, 12.0, feature_cache="hit")  # an old hit: no feature_pass_seconds
    ds = analyse([r])
    assert ds.best.cost == 12.0 and any("logged no feature_pass_seconds" in n for n in ds.notes)


def test_runs_with_a_missing_or_nan_metric_are_listed_not_counted():
    rows = [run("lite0", "freeze", 0, 0.9, 10.0), run("lite0", "finetune", 0, None, 50.0, error="best_val_acc is nan")]
    rows[1].best_val_acc = None
    ds = analyse(rows)
    assert [g.strategy for g in ds.groups] == ["freeze"] and ds.failed == [rows[1]]
    header, body = render.table(rows, groups.analyse(rows))
    assert [b[0] for b in body] == ["*", "NaN"]


def test_a_dataset_where_nothing_finished_gives_a_verdict_not_a_crash():
    from tl.analysis import verdict

    rows = [run("lite0", "finetune", 0, None, 50.0, status="FAILED", error="loss is nan at epoch 2")]
    ds = analyse(rows)
    assert verdict.lines(ds) == ["No run on pets-0a1b2c3d finished with a usable best val acc.",
                                 "Not counted (failed, or no usable best val acc): lite0 + finetune seed 0 "
                                 "(FAILED: loss is nan at epoch 2)."]


def test_a_missing_seed_beside_integer_seeds_does_not_crash():
    rows = [run("lite0", "freeze", None, 0.9, 10.0), run("lite0", "freeze", 0, 0.91, 10.0),
            run("lite0", "finetune", 1, 0.8, 10.0), run("lite0", "finetune", 0, 0.81, 10.0)]
    ds = analyse(rows)
    assert render.group_table(ds)[1][0][-1] == "0,-"
    assert not math.isnan(ds.groups[1].vs_best.p or 0.0)


def test_the_run_table_stars_the_runs_of_the_best_group_as_the_group_table_does():
    rows = [run("lite0", "freeze", s, acc, 10.0) for s, acc in ((0, 0.90), (1, 0.90), (2, 0.90))]
    rows += [run("lite0", "finetune", s, acc, 10.0) for s, acc in ((0, 0.95), (1, 0.80), (2, 0.80))]
    datasets = groups.analyse(rows)  # finetune has the best run, freeze the best mean
    _, body = render.table(groups.by_rank(rows, datasets), datasets)
    starred = {(b[2]) for b in body if b[0] == "*"}
    assert starred == {"freeze"} and sum(b[0] == "*" for b in body) == 3


def test_the_matrix_title_says_a_cell_is_the_best_over_the_other_swept_keys():
    rows = [run("lite0", "freeze", s, 0.9, 10.0, varied=f"optimizer.lr={lr} trainer.seed={s}")
            for s in (0, 1) for lr in (0.1, 0.01)]
    (m,) = render.matrices(groups.analyse(rows)).values()
    assert m.what == "Test acc (mean over seeds; each pair's best over optimizer.lr)"


def test_a_resumed_run_whose_total_counts_its_last_process_costs_its_train_seconds_at_least():
    r = run("lite0", "finetune", 0, 0.9, 20.0)
    r.train_seconds = 150.0  # cumulative over the processes; total_seconds only the last one
    ds = analyse([r, run("lite0", "freeze", 0, 0.8, 30.0)])
    assert ds.best.cost == 150.0
    assert any("logged total_seconds below their train_seconds" in n for n in ds.notes)
