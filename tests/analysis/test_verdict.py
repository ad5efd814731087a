"""The verdict that ends `tl compare`: the best with its interval, what cannot be told apart
from it, the cheapest choice nearly as good; with one seed, that intervals are unknown and how
to get them. One verdict per dataset, logged as compare/verdict.md."""

import contextlib
import io

from tests.helpers.logged_sweeps import Job, log_sweep
from tl.analysis import groups, verdict
from tl.tracking.runs import Row
from tl.cli.main import main as tl_command


def run(model, strategy, seed, test_acc, seconds, data="cats_vs_dogs-3fa2b1c0", val=None):
    r = Row(f"{model}-{strategy}-{seed}", "", "FINISHED", model, strategy, data,
            val if val is not None else test_acc, 3, 0.3, seconds / 2, 1, 2,
            varied=f"trainer.seed={seed}", data_key=data, seed=seed, test_acc=test_acc, total_seconds=seconds)
    return r


def three_seed_sweep():
    rows = []
    for seed, (pf, ft, fr) in enumerate([(0.980, 0.978, 0.972), (0.985, 0.981, 0.976), (0.978, 0.979, 0.971)]):
        rows += [run("lite0", "partial_freeze", seed, pf, 140.0), run("lite0", "finetune", seed, ft, 300.0),
                 run("lite0", "freeze", seed, fr, 10.0)]
    return rows


def test_three_seeds_give_the_best_with_its_interval_what_ties_it_and_the_cheapest_near_it():
    (ds,) = groups.analyse(three_seed_sweep()).values()
    ft = next(g for g in ds.groups if g.strategy == "finetune")
    lines = verdict.lines(ds)
    assert lines == [
        "Best on cats_vs_dogs-3fa2b1c0: lite0 + partial_freeze, test acc 0.981 ± 0.009 (95% CI, 3 seeds).",
        "Indistinguishable from it (paired t-test against the best, p >= 0.05): "
        f"lite0 + finetune (p={ft.vs_best.p:.3f}).",
        "Cheapest within 1 point of the best: lite0 + freeze, test acc 0.973, 14x less time (10.0 vs 140.0 total s).",
    ]
    assert ft.vs_best.p >= 0.05  # the finetune gap (0.2 points, not the same sign on every seed) is noise


def test_a_group_beaten_on_every_seed_is_not_called_indistinguishable():
    (ds,) = groups.analyse(three_seed_sweep()).values()
    fr = next(g for g in ds.groups if g.strategy == "freeze")
    assert fr.indistinguishable is False and fr.vs_best.p < 0.05
    assert "lite0 + freeze (p=" not in verdict.lines(ds)[1]


def test_one_seed_says_the_intervals_are_unknown_and_how_to_get_them():
    rows = [run("lite0", "partial_freeze", 42, 0.98, 140.0), run("lite0", "freeze", 42, 0.95, 10.0)]
    (ds,) = groups.analyse(rows).values()
    lines = verdict.lines(ds)
    assert lines[0] == "Best on cats_vs_dogs-3fa2b1c0: lite0 + partial_freeze, test acc 0.980 (1 seed)."
    assert lines[1] == ("One seed per configuration: the intervals are unknown and no difference can be told "
                        "from noise. Add trainer.seed=0,1,2 to the sweep for 95% intervals and a test of "
                        "which differences are real.")
    assert lines[2] == ("Cheapest within 1 point of the best: the best itself (140.0 total s). Cheapest on the "
                        "Pareto front: lite0 + freeze, test acc 0.950 (-3.0 points), 14x less time "
                        "(10.0 vs 140.0 total s).")


def test_a_group_with_one_seed_beside_replicated_ones_is_named_untestable():
    rows = three_seed_sweep() + [run("resnet18", "finetune", 0, 0.97, 200.0)]
    (ds,) = groups.analyse(rows).values()
    assert "Not testable, fewer than 2 seeds: resnet18 + finetune (add trainer.seed=0,1,2)." in verdict.lines(ds)


def test_the_within_threshold_is_in_accuracy_points():
    (ds,) = groups.analyse(three_seed_sweep()).values()
    # freeze is 0.8 points below the best: within 1 point, not within 0.5
    assert verdict.lines(ds, within=0.5)[2].startswith("Cheapest within 0.5 points of the best: the best itself")


def test_without_a_test_split_the_verdict_ranks_by_best_val_acc_and_says_so():
    rows = [run("lite0", "freeze", 42, None, 10.0, val=0.9), run("lite0", "finetune", 42, None, 90.0, val=0.95)]
    (ds,) = groups.analyse(rows).values()
    lines = verdict.lines(ds)
    assert lines[0].startswith("Best on cats_vs_dogs-3fa2b1c0: lite0 + finetune, best val acc 0.950")
    assert any(line.startswith("Note: no test split in these runs: ranked by best val acc") for line in lines)


def test_runs_with_and_without_a_test_split_are_all_ranked_by_val():
    rows = [run("lite0", "freeze", 42, 0.99, 10.0, val=0.9), run("lite0", "finetune", 42, None, 90.0, val=0.95)]
    (ds,) = groups.analyse(rows).values()
    assert ds.metric == "best val acc" and ds.best.strategy == "finetune"
    assert "only 1 of 2 runs have a test split" in " ".join(verdict.lines(ds))


def test_compare_prints_and_logs_one_verdict_per_dataset(store, tmp_path):
    jobs = [Job("lite0", "freeze", 0.90 + 0.01 * s, seed=s, test_acc=0.9, total_seconds=10.0, data_id="pets-00000001")
            for s in (0, 1, 2)]
    jobs += [Job("lite0", "freeze", 0.70, seed=s, test_acc=0.7 + 0.01 * s, total_seconds=12.0,
                 data_id="flowers-00000002") for s in (0, 1, 2)]
    client, parent, _ = log_sweep(store, jobs)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert tl_command(["compare", "--tracking-uri", store, "--out", str(tmp_path)]) == 0
    text = stdout.getvalue()
    assert "Verdict (pets-00000001):\n  Best on pets-00000001: lite0 + freeze, test acc 0.900 ± 0.000" in text
    assert "Verdict (flowers-00000002):\n  Best on flowers-00000002: lite0 + freeze, test acc 0.710 ± 0.025" in text
    md = (tmp_path / "verdict.md").read_text()
    assert md.count("## ") == 2 and "## pets-00000001" in md and "## flowers-00000002" in md
    assert "Best on flowers-00000002: lite0 + freeze, test acc 0.710 ± 0.025 (95% CI, 3 seeds)." in md
    assert "compare/verdict.md" in {a.path for a in client.list_artifacts(parent, "compare")}


def test_a_confidence_outside_0_1_is_refused_naming_the_option(store, capsys):
    log_sweep(store, [Job("lite0", "freeze", 0.9)])
    assert tl_command(["compare", "--tracking-uri", store, "--confidence", "95"]) == 2
    assert "--confidence 95.0 must lie strictly between 0 and 1, e.g. 0.95" in capsys.readouterr().err


# --- what the answer's interval covers, and what limits it --------------------------------

from tests.helpers.rows import run as row  # noqa: E402


def seeds(strategy, accs, seconds=10.0, split_seed="0", test_images=76, **kw):
    return [row("lite0", strategy, s, acc, seconds, split_seed=split_seed if split_seed != "seed" else str(s),
                test_images=test_images, **kw) for s, acc in enumerate(accs)]


def verdict_of(rows, within=1.0):
    (ds,) = groups.analyse(rows).values()
    return verdict.lines(ds, within)


def test_a_fixed_test_split_says_the_interval_is_training_noise_and_what_the_test_set_allows():
    lines = verdict_of(seeds("finetune", [0.90, 0.92, 0.91], 100.0) + seeds("freeze", [0.80, 0.81, 0.82]))
    (line,) = [x for x in lines if x.startswith("The intervals cover")]
    assert line.startswith("The intervals cover training noise only, on one fixed test split of 76 images "
                           "(one image is 1.3 points): that split alone allows test acc 0.8")
    assert "(Wilson 95% interval of 69/76 correct)" in line


def test_splits_resampled_with_the_seed_say_training_and_split_noise():
    lines = verdict_of(seeds("finetune", [0.90, 0.92, 0.91], split_seed="seed")
                       + seeds("freeze", [0.80, 0.81, 0.82], split_seed="seed"))
    assert ("The intervals cover training and split noise: dataset.split_seed varied with the seed, so each "
            "seed drew its own test images.") in lines


def test_a_best_group_with_one_seed_is_caveated_and_never_silently_recommended():
    rows = seeds("finetune", [0.95]) + seeds("freeze", [0.94, 0.945, 0.94], seconds=100.0)
    lines = verdict_of(rows)
    assert lines[1].startswith("Caveat: the best has one seed (n=1;")
    assert "Not testable against a best with one seed: lite0 + freeze." in lines
    rows = seeds("finetune", [0.95, 0.95, 0.96], seconds=100.0) + seeds("freeze", [0.945])
    assert any("lite0 + freeze, test acc 0.945 (n=1: one run, no interval), 10x less time" in x
               for x in verdict_of(rows))


def test_two_seeds_say_the_smallest_gap_the_test_could_detect_and_ask_for_more():
    rows = seeds("partial_freeze", [0.985, 0.985], 100.0) + seeds("freeze", [0.93, 0.83])
    (line,) = [x for x in verdict_of(rows) if x.startswith("Indistinguishable")]
    assert "lite0 + freeze (p=0." in line
    assert "at 2 seeds this test detects only gaps above" in line and "this one is 10.5: add seeds" in line


def test_strategies_at_one_shared_lr_are_called_a_comparison_of_recipes():
    rows = seeds("finetune", [0.9, 0.91], lr="0.01") + seeds("freeze", [0.8, 0.81], lr="0.01")
    assert ("Strategies share optimizer.lr=0.01: their comparison is a comparison of recipes (each strategy at "
            "that one learning rate, not at its best); sweep optimizer.lr per strategy to compare the "
            "strategies themselves.") in verdict_of(rows)


def test_strategies_swept_at_their_own_rates_by_hand_are_named_with_their_recipe_and_not_tuned():
    rows = (seeds("finetune", [0.9, 0.91], lr="0.01", epochs=6)
            + seeds("freeze", [0.8, 0.81], lr="0.1", weight_decay="0.0005", epochs=6))
    (line,) = [x for x in verdict_of(rows) if "recipe" in x.lower()]
    assert line == ("Recipes as swept, not tuned per strategy (each strategy's best group): lite0 + finetune at "
                    "lr=0.01, 6 epochs; lite0 + freeze at lr=0.1, wd=0.0005, 6 epochs. tl answer tunes each "
                    "strategy's rate on val before comparing.")


def test_a_tl_answers_finalists_are_named_with_the_recipe_it_tuned_for_each():
    how = {"finetune": "tuned: the best of 2 learning rates by val acc, successive halving at epochs 1, 3, 6",
           "freeze": "tuned: the best of 6 head settings (lr x weight decay) by val acc in the screen"}
    rows = [r for s, accs, lr in (("finetune", [0.9, 0.91], "0.008"), ("freeze", [0.8, 0.81], "0.2"))
            for r in seeds(s, accs, lr=lr, weight_decay="0", epochs=6, tuned=how[s])]
    (line,) = [x for x in verdict_of(rows) if "recipe" in x.lower()]
    assert line == ("Recipes as tl answer chose them, each strategy's own: lite0 + finetune at lr=0.008, 6 epochs "
                    f"({how['finetune']}); lite0 + freeze at lr=0.2, 6 epochs ({how['freeze']}).")


def test_the_whole_answer_is_one_call_for_a_sweeps_parent_run(store, tmp_path):
    from tl import analysis

    jobs = [Job("lite0", "freeze", 0.9, seed=s, test_acc=0.90 + s / 100, total_seconds=10.0) for s in (0, 1)]
    jobs += [Job("lite0", "finetune", 0.9, seed=s, test_acc=0.80, total_seconds=100.0) for s in (0, 1)]
    _, parent, _ = log_sweep(store, jobs)
    report = analysis.report(store, parent)
    assert "Verdict (imagefolder):\n  Best on imagefolder: lite0 + freeze, test acc 0.905" in report.text
    assert "**Verdict.** Best on imagefolder: lite0 + freeze" in report.markdown
    assert {p.name for p in report.write(tmp_path)} == {"table.md", "runs.csv", "curves.png", "matrix.png",
                                                        "pareto.png", "verdict.md"}
