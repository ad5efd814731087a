"""The race's logic over a fake runner and a fake clock: the budget holds, a failed trial is
reported and the race goes on, the rungs and promotions are successive halving's."""

import pytest

from tl.answer import budget as budgets
from tl.answer import schedule, space
from tl.answer.race import Outcome, Race, Settings
from tl.errors import ConfigError

RECIPES = {"lr": {"freeze": [0.1, 0.03], "finetune": [0.01, 0.003, 0.001], "partial_freeze": [0.01, 0.003]}}
EPOCH_SECONDS = {"freeze": 0.5, "finetune": 20.0, "partial_freeze": 10.0}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FakeRunner:
    """Each job advances the clock by its epochs' seconds plus 3 s of start-up; val acc grows with
    epochs and is higher for smaller learning rates; recipes in `fail` raise."""

    parallel = 1

    def __init__(self, clock, fail=()):
        self.clock, self.fail, self.runs, self.epochs, self.launched, self.notes = clock, set(fail), 0, {}, [], {}

    def scores(self, model):
        self.clock.now += 2.0
        return {"logme": 1.0 if model == "a" else 0.5, "knn_acc": 0.8, "seconds": 2.0, "feature_cache": "miss"}

    def prior(self, model):
        return 75.0

    def run(self, jobs):
        out = []
        for job in jobs:
            self.launched.append(job)
            rid = job.run_id or f"run{self.runs}"
            self.runs += 1 if job.run_id is None else 0
            before = self.epochs.get(rid, 0)
            trained = job.stop_after - before
            self.clock.now += 3.0 + trained * EPOCH_SECONDS[job.recipe.strategy]
            if (job.recipe.strategy, job.recipe.lr) in self.fail:
                out.append(Outcome(job, rid, False, error="ConfigError: broken recipe"))
                continue
            self.epochs[rid] = job.stop_after
            acc = self.acc(job.recipe, job.stop_after, job.seed)
            heads = {r: (self.acc(r, job.stop_after, job.seed), 0.5) for r in job.grid}
            out.append(Outcome(job, rid, True, acc, job.stop_after, job.stop_after * EPOCH_SECONDS[job.recipe.strategy],
                               n_val=100, test_acc=acc - 0.01 if job.test else None,
                               curve=[(e, acc) for e in range(1, job.stop_after + 1)], heads=heads))
        return out

    def acc(self, recipe, epochs, seed):
        return min(0.99, 0.5 + 0.05 * epochs + 0.01 / recipe.lr * 0.01 + (0.1 if recipe.model == "a" else 0))

    def note(self, outcome, reason):
        self.notes[outcome.run_id] = reason


def settings(**kw):
    base = dict(models=["a", "b"], strategies=["freeze", "finetune", "partial_freeze"], epochs=6, min_epochs=1,
                eta=3, seeds=[0, 1, 2], max_finalists=2)
    return Settings(**{**base, **kw})


def test_rungs_are_min_epochs_times_eta_to_the_final_length():
    assert schedule.rungs(6, 1, 3) == [1, 3, 6]
    assert schedule.rungs(9, 1, 3) == [1, 3, 9]
    assert schedule.rungs(2, 1, 2) == [1, 2]
    with pytest.raises(ConfigError, match="eta"):
        schedule.rungs(6, 1, 1)


def test_promotion_keeps_the_top_third_ties_together_and_drops_failures():
    kept, dropped = schedule.promote({"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6, "e": None}, 3)
    assert kept == ["a", "b"] and set(dropped) == {"c", "d", "e"}
    kept, _ = schedule.promote({"a": 0.9, "b": 0.9, "c": 0.9}, 3)
    assert sorted(kept) == ["a", "b", "c"]


@pytest.mark.parametrize("text, seconds", [("20m", 1200), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400), (600, 600)])
def test_budgets_read_as_durations(text, seconds):
    assert budgets.parse(text) == seconds


@pytest.mark.parametrize("text", ["20 minutes", "m", "", "-5m", "0s"])
def test_a_budget_that_is_no_duration_is_refused_with_an_example(text):
    with pytest.raises(ConfigError, match="20m"):
        budgets.parse(text)


def test_a_full_race_promotes_continues_and_confirms_with_every_seed():
    clock = FakeClock()
    runner = FakeRunner(clock)
    answer = Race(settings(), RECIPES, runner, budgets.Budget(10_000, clock), say=lambda _: None).run()
    assert answer.rungs == [1, 3, 6]
    continued = [j for j in runner.launched if j.run_id is not None]
    assert continued and all(j.stage == "race" for j in continued)
    assert any("eliminated at rung 1" in why for why in runner.notes.values())
    assert answer.finalists and {o.job.seed for o in answer.confirmed} == {0, 1, 2}
    assert all(o.job.test for o in answer.confirmed)
    assert not any(j.test for j in runner.launched if j.stage != "confirm")


def test_the_budget_is_never_overshot_by_more_than_one_trials_rung_and_what_was_not_tried_is_said():
    clock = FakeClock()
    runner = FakeRunner(clock)
    budget = budgets.Budget(150, clock)
    lines = []
    answer = Race(settings(), RECIPES, runner, budget, say=lines.append).run()
    longest_rung = 3.0 + 6 * max(EPOCH_SECONDS.values())  # one trial trained straight to the end
    assert budget.spent() <= 150 + longest_rung
    assert answer.not_tried and all("budget" in t for t in answer.not_tried)
    assert any(line.startswith("[race 1/3]") and "estimated" in line for line in lines)


def test_a_trial_that_fails_is_reported_and_the_race_goes_on():
    clock = FakeClock()
    runner = FakeRunner(clock, fail={("finetune", 0.01)})
    answer = Race(settings(), RECIPES, runner, budgets.Budget(10_000, clock), say=lambda _: None).run()
    assert [o.job.recipe.lr for o in answer.failed] == [0.01, 0.01]  # once per backbone
    assert all("failed at rung 1" in why for r, why in answer.dropped.items() if r.lr == 0.01 and r.strategy == "finetune")
    assert answer.confirmed, "the race went on to a confirmed answer"


def test_finalists_are_the_best_those_whose_interval_reaches_it_and_the_cheapest():
    clock = FakeClock()
    race = Race(settings(max_finalists=3), RECIPES, FakeRunner(clock), budgets.Budget(10_000, clock), say=lambda _: None)
    from tl.answer.space import Recipe
    from tl.answer.race import Job

    def o(strategy, acc, n=50):
        return Outcome(Job("race", Recipe("a", strategy, 0.01), 6, 6), "r", True, acc, 6, 1.0, n_val=n)

    best, close, far, cheap = o("finetune", 0.90), o("partial_freeze", 0.86), o("finetune", 0.50), o("freeze", 0.40)
    race.rates.epoch = {("a", "finetune"): 20.0, ("a", "partial_freeze"): 10.0, ("a", "freeze"): 0.1}
    chosen = race.finalists([far, cheap, close, best])
    assert chosen[0] is best and close in chosen and cheap in chosen and far not in chosen


class NoisyHeads(FakeRunner):
    """Head settings whose val acc depends on the seed: lr 0.1 is best on seed 0 alone, lr 0.03
    on average; at equal mean val acc the lower val loss wins."""

    VAL = {0.1: {0: 0.95, 1: 0.70, 2: 0.70}, 0.03: {0: 0.90, 1: 0.85, 2: 0.85}}

    def acc(self, recipe, epochs, seed):
        if recipe.strategy == "freeze" and seed is not None:
            return self.VAL[recipe.lr][seed]
        return super().acc(recipe, epochs, seed)


def test_the_screen_trains_each_backbones_head_grid_once_per_seed_and_picks_by_mean_val_acc():
    clock = FakeClock()
    runner = NoisyHeads(clock)
    race = Race(settings(strategies=["freeze"]), RECIPES, runner, budgets.Budget(10_000, clock), say=lambda _: None)
    race.screen()
    screen = [j for j in runner.launched if j.stage == "screen"]
    assert len(screen) == 2 * 3, "one run per backbone and seed, however many head settings"
    assert all({r.lr for r in j.grid} == {0.1, 0.03} for j in screen)
    assert race.answer.screen["a"]["probe_lr"] == 0.03 and race.answer.screen["a"]["probe"] == pytest.approx(0.8667, abs=1e-4)


def test_between_head_settings_equally_accurate_on_val_the_lower_val_loss_wins():
    from tl.answer.race import Job, best_head
    from tl.answer.space import Recipe

    def o(lr, acc, loss):
        return Outcome(Job("screen", Recipe("a", "freeze", lr), 6, 6), "r", True, acc, 6, 1.0, val_loss=loss)

    assert best_head([o(0.2, 0.8, 9.0), o(0.01, 0.8, 0.4), o(0.05, 0.7, 0.1)]).job.recipe.lr == 0.01


def test_a_rung_cut_short_by_the_budget_has_tried_every_strategy_first():
    clock = FakeClock()
    runner = FakeRunner(clock)
    race = Race(settings(models=["a"], strategies=["finetune", "partial_freeze"]), RECIPES, runner,
                budgets.Budget(10_000, clock), say=lambda _: None)
    race.screen()
    trials = race._order(space.race_grid(["a"], ["finetune", "partial_freeze"], RECIPES, 0.0))
    assert [t.strategy for t in trials[:2]] == ["finetune", "partial_freeze"]


def test_a_phased_strategy_is_costed_at_the_fine_tune_it_ends_as_not_at_its_probe():
    rates = budgets.Rates(frozen_pass={"a": 10.0})
    rates.learn("a", "lp_ft", 1, 0.01)  # rung 1: lp_ft's linear probe on cached features
    assert rates.epoch_seconds("a", "lp_ft") == rates.train_factor * 10.0  # the fine-tune's guess
    assert not rates.measured("a", "lp_ft")
    rates.learn("a", "finetune", 1, 50.0)
    assert rates.epoch_seconds("a", "lp_ft") == 50.0 and rates.measured("a", "lp_ft")


def test_the_report_writes_its_markdown_and_figures_for_a_finished_race(tmp_path):
    from tl.answer import report

    clock = FakeClock()
    race = Race(settings(), RECIPES, FakeRunner(clock), budgets.Budget(10_000, clock), say=lambda _: None)
    answer = race.run()
    files = report.write(tmp_path, answer, race.rates, 10_000, race.budget.spent())
    assert [f.name for f in files] == ["answer.md", "race.png", "front.png", "ranking.png"]
    text = files[0].read_text()
    assert "eliminated at rung 1" in text and "Kendall tau" in text and "## Confirmed" in text
    assert "| a freeze lr=0.03 | " in text, "each head setting with its mean val acc over the seeds"
