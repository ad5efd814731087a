"""The answer-vs-grid benchmark's verdict is arithmetic on its runs: check it on made-up numbers."""

import pytest

from tl.answer import space
from tl.bench import answer_grid as ag

FT = ("efficientnet_lite0", "finetune", 0.008, 0.0)
FT_SLOW = ("efficientnet_lite0", "finetune", 0.002, 0.0)
FR = ("efficientnet_lite0", "freeze", 0.05, 0.0005)


def runs(key, accs):
    return [{"key": key, "seed": str(42 + i), "test_acc": a, "total_seconds": 10.0, "run_id": f"{key[1]}{i}"}
            for i, a in enumerate(accs)]


def test_the_grid_best_is_the_candidate_with_the_highest_mean_over_seeds():
    grid = [*runs(FT, [0.90, 0.80, 0.85]), *runs(FR, [0.95, 0.70, 0.75])]  # freeze has the top run, not the mean
    best = ag.grid_best(grid)
    assert best["config"] == "efficientnet_lite0 finetune lr=0.008"
    assert best["test_acc"] == pytest.approx(0.85) and best["seeds"] == 3
    assert best["half_width"] == pytest.approx(4.303 * 0.05 / 3 ** 0.5, rel=1e-3)  # t(2) * sd / sqrt(n)


def test_a_choice_within_one_point_at_a_quarter_of_the_seconds_meets_the_goal():
    best = ag.summary(runs(FT, [0.90, 0.90, 0.90]), FT)
    choice = ag.summary(runs(FT_SLOW, [0.895, 0.89, 0.885]), FT_SLOW)
    v = ag.verdict(best, choice, grid_seconds=1000.0, answer_seconds=250.0)
    assert v["gap_points"] == pytest.approx(1.0) and v["within_1_point"]
    assert v["share"] == 0.25 and v["fast_enough"] and v["met"]


def test_a_choice_further_than_a_point_but_inside_the_best_interval_counts_as_close():
    best = ag.summary(runs(FT, [0.95, 0.85, 0.90]), FT)  # wide interval
    choice = ag.summary(runs(FR, [0.88, 0.87, 0.86]), FR)
    v = ag.verdict(best, choice, 1000.0, 100.0)
    assert v["gap_points"] == pytest.approx(3.0)
    assert not v["within_1_point"] and v["inside_interval"] and v["met"]


def test_a_far_choice_or_a_slow_answer_misses_and_the_table_says_no():
    best = ag.summary(runs(FT, [0.90, 0.90, 0.90]), FT)
    far = ag.summary(runs(FR, [0.80, 0.80, 0.80]), FR)
    v = ag.verdict(best, far, 1000.0, 100.0)
    assert not v["met"] and not v["inside_interval"]  # zero-width interval: only equal means are inside
    slow = ag.verdict(best, best, 1000.0, 400.0)
    assert slow["gap_points"] == 0 and not slow["fast_enough"] and not slow["met"]
    res = {"data": "d", "settings": "s", "grid_runs": 6, "grid_seconds": 1000.0, "answer_seconds": 400.0,
           "grid_best": best, "answer_choice": best, "verdict": slow}
    md = ag.markdown(res)
    assert "| answer's seconds / grid's | 40% | <= 25% | NO |" in md
    assert "0.900 ± 0.000 (3 seeds)" in md


def test_no_choice_from_the_answer_is_a_miss_not_a_crash():
    best = ag.summary(runs(FT, [0.9]), FT)
    v = ag.verdict(best, None, 1000.0, 100.0)
    assert v["gap_points"] is None and not v["met"]
    md = ag.markdown({"data": "d", "settings": "s", "grid_runs": 1, "grid_seconds": 1000.0, "answer_seconds": 100.0,
                      "grid_best": best, "answer_choice": None, "verdict": v, "answer_winner": "lite0 freeze lr=9"})
    assert "| answer's choice | none | - |" in md
    assert "WARNING: the answer named 'lite0 freeze lr=9', but none of its confirmed runs" in md


def test_a_grid_without_test_results_is_refused_with_the_reason():
    with pytest.raises(RuntimeError, match="test split"):
        ag.grid_best([])


def test_a_run_is_keyed_by_the_candidate_its_overrides_name():
    tag = "model=efficientnet_lite0 strategy=freeze optimizer.lr=0.05 optimizer.weight_decay=0.0005 trainer.seed=43"
    assert ag.key_of(tag) == FR
    assert ag.label(FR) == "efficientnet_lite0 freeze lr=0.05 wd=0.0005"


def test_the_grid_sweeps_train_exactly_the_answers_candidates_at_every_seed():
    recipes = space.load_recipes("default")
    sweeps = ag.grid_sweeps(["efficientnet_lite0"], ["freeze", "lp_ft"], recipes, 0.0, 4, [42, 43, 44])
    freeze, lp_ft = sweeps
    head = ",".join(f"{v:g}" for v in recipes["lr"]["freeze"])  # the recipes file's grids, whatever they are
    assert f"optimizer.lr={head}" in freeze and "optimizer.weight_decay=0,0.0005" in freeze
    probe = ",".join(f"{v:g}" for v in recipes["lr"]["lp_ft"])
    assert f"optimizer.lr={probe}" in lp_ft and "strategy.probe_epochs=1" in lp_ft
    assert all("trainer.epochs=4" in s and "trainer.seed=42,43,44" in s for s in sweeps)
    args = ag.answer_args(["efficientnet_lite0"], ["freeze", "lp_ft"], {"freeze": [0.2], "lp_ft": [0.08]}, 4, 3)
    assert "hydra.sweeper.epochs=4" in args and "hydra.sweeper.seeds=3" in args
    assert "hydra.sweeper.lr.freeze=[0.2]" in args and "strategies=[freeze,lp_ft]" in args


def test_make_bench_reports_the_answer_targets_beside_the_others():
    from tl.bench import report

    best = ag.summary(runs(FT, [0.9, 0.9, 0.9]), FT)
    res = {"cpu": "c", "data": "d", "epochs": 3, "freeze_epochs": 25,
           "answer_grid": {"verdict": ag.verdict(best, None, 1000.0, 300.0)}}
    t = {x["target"]: x for x in report.targets(res)}
    assert not t["tl answer's choice, points below the grid's best"]["met"]
    assert t["tl answer's seconds / the grid's"]["value"] == 0.3 and not t["tl answer's seconds / the grid's"]["met"]
    assert "answer_grid" not in {r["measurement"] for r in report.rows(res)}


def test_runs_that_did_not_finish_are_named_in_the_table():
    best = ag.summary(runs(FT, [0.9]), FT)
    res = {"data": "d", "settings": "s", "grid_runs": 5, "grid_seconds": 1000.0, "answer_seconds": 100.0,
           "grid_best": best, "answer_choice": best, "verdict": ag.verdict(best, best, 1000.0, 100.0),
           "grid_failed_runs": 2, "answer_failed_runs": 0}
    md = ag.markdown(res)
    assert "WARNING: 2 run(s) of the grid did not finish" in md and "of the answer" not in md


def test_the_answers_choice_and_its_confirmed_runs_are_read_from_the_store(store):
    from tl.tracking.store import prepare_store

    client = prepare_store(store)
    exp = client.create_experiment("answer")
    parent = client.create_run(exp, tags={"tl.role": "sweep"}).info.run_id
    confirm = client.create_run(exp, tags={"mlflow.parentRunId": parent, "tl.role": "sweep"}).info.run_id
    client.set_tag(parent, "tl.answer.confirm_run", confirm)
    client.set_tag(parent, "tl.answer.winner", "efficientnet_lite0 freeze lr=0.05 wd=0.0005")
    for key, seed, acc in ((FR, 42, 0.8), (FR, 43, 0.9), (FT, 42, 0.7)):
        run = client.create_run(exp, tags={"mlflow.parentRunId": confirm, "tl.model": key[0], "tl.overrides":
                                           f"model={key[0]} strategy={key[1]} optimizer.lr={key[2]:g} "
                                           f"optimizer.weight_decay={key[3]:g} trainer.seed={seed}"}).info.run_id
        client.log_param(run, "trainer.seed", seed)
        client.log_metric(run, "test_acc", acc)
        client.set_terminated(run, "FINISHED")
    failed = client.create_run(exp, tags={"mlflow.parentRunId": confirm, "tl.model": "x"}).info.run_id
    client.set_terminated(failed, "FAILED")
    chosen, confirmed, winner = ag.answer_choice(store, "answer")
    assert chosen == FR and winner == "efficientnet_lite0 freeze lr=0.05 wd=0.0005"
    assert ag.summary(confirmed, chosen)["test_acc"] == pytest.approx(0.85)
    assert len(confirmed) == 3 and ag.failed_runs(store, "answer") == 1


def test_overrides_after_a_list_option_are_overrides_not_strategies():
    args = ag.parse(["--strategies", "freeze", "finetune", "model.input_size=32", "--epochs", "2"])
    assert args.strategies == ["freeze", "finetune"] and args.overrides == ["model.input_size=32"]
