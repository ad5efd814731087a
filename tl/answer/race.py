"""Screen -> race -> confirm, under a wall-clock budget, over any `Runner` (the Hydra launchers'
in `tl.answer.hydra_jobs`; a fake one in the tests).

- Screen: one frozen pass per backbone (LogME, k-NN), then the head's recipe tuned by real
  `freeze` runs over the head grid on the cached features, at the final schedule length.
- Race: successive halving (`tl.answer.schedule`) of every other strategy's recipes; each rung
  one batch; a promoted trial continues its own run; a dropped one is tagged with why.
- Confirm: the finalists (the best by val, every trial whose val interval reaches it, and the
  cheapest) with several seeds at full length; only these runs are evaluated on test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from scipy.stats import binomtest

from tl.answer import budget as budgets
from tl.answer import schedule, space
from tl.answer.space import Recipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    stage: str            # screen | race | confirm
    recipe: Recipe
    epochs: int           # the final schedule length every trial is configured for
    stop_after: int       # the epoch this job trains to (== epochs: to the end)
    seed: int | None = None
    run_id: str | None = None  # continue this run (a promoted trial) instead of starting one
    test: bool = False    # evaluate the test split at the end (confirmed runs only)
    tuned: str = ""       # how the recipe was chosen (confirmed runs), tagged on the run
    grid: tuple = ()      # a screen job: the head settings (Recipes) its one freeze run trains at once


@dataclass
class Outcome:
    job: Job
    run_id: str | None
    ok: bool
    val_acc: float | None = None  # best val acc up to job.stop_after
    epochs: int = 0               # epochs trained so far
    train_seconds: float = 0.0    # of all those epochs
    n_val: int = 0
    test_acc: float | None = None
    error: str = ""
    curve: list = field(default_factory=list)  # [(epoch, val_acc)]
    reused: bool = False          # found finished in the store (--resume), not launched
    val_loss: float | None = None  # val loss at the best val epoch (the screen's tie-break)
    heads: dict = field(default_factory=dict)  # a grid job's: Recipe -> (best val acc, val loss there)


class Runner(Protocol):
    parallel: int  # jobs the launcher runs at once

    def scores(self, model: str) -> dict: ...  # logme, knn_acc, seconds, feature_cache; raises on failure
    def prior(self, model: str) -> float | None: ...
    def run(self, jobs: list[Job]) -> list[Outcome]: ...
    def note(self, outcome: Outcome, reason: str) -> None: ...


@dataclass
class Settings:
    models: list[str]
    strategies: list[str]
    epochs: int
    min_epochs: int
    eta: int
    seeds: list[int]
    max_finalists: int
    base_weight_decay: float = 0.0
    confidence: float = 0.95


@dataclass
class Stage:
    name: str
    estimated: float
    spent: float = 0.0
    jobs: int = 0


@dataclass
class Answer:
    settings: Settings
    screen: dict = field(default_factory=dict)   # model -> {logme, knn_acc, prior, probe, error, ...}
    heads: list = field(default_factory=list)    # each head setting's Outcome, over the screen's seeds
    race: dict = field(default_factory=dict)     # Recipe -> [Outcome per rung]
    dropped: dict = field(default_factory=dict)  # Recipe -> why it stopped
    failed: list = field(default_factory=list)   # Outcome of every failed job
    finalists: list = field(default_factory=list)  # Outcome at full length
    confirmed: list = field(default_factory=list)  # Outcome of each confirm run
    not_tried: list = field(default_factory=list)  # "what: why"
    stages: list = field(default_factory=list)
    rungs: list = field(default_factory=list)


def best_head(heads: list[Outcome]) -> Outcome | None:
    """The head setting with the best mean val acc; among equals, the lowest val loss (a
    head that is as accurate and less overconfident), then the first in the grid."""
    ok = [o for o in heads if o.ok and o.val_acc is not None]
    if not ok:
        return None
    return max(ok, key=lambda o: (round(o.val_acc, 9), -o.val_loss if o.val_loss is not None else float("-inf")))


class Race:
    def __init__(self, settings: Settings, recipes: dict, runner: Runner, budget: budgets.Budget, say=print):
        self.s, self.recipes, self.runner, self.budget, self.say = settings, recipes, runner, budget, say
        self.rates = budgets.Rates()
        self.answer = Answer(settings, rungs=schedule.rungs(settings.epochs, settings.min_epochs, settings.eta))
        self._trained: dict = {}  # run id -> (epochs, train seconds) at its last outcome

    # --- launching under the budget -----------------------------------------------------------

    def _cost(self, job: Job) -> float:
        done = self._trained.get(job.run_id, (0, 0.0))[0] if job.run_id else 0
        return self.rates.run_seconds(job.recipe.model, job.recipe.strategy, job.stop_after - done)

    def estimate(self, jobs: list[Job]) -> float:
        p = max(1, self.runner.parallel)
        return sum(budgets.batch_wall([self._cost(j) for j in jobs[i:i + p]], p) for i in range(0, len(jobs), p))

    def launch(self, jobs: list[Job], stage: Stage, reserve=None) -> tuple[list[Outcome], list[Job]]:
        """Run `jobs` in batches of the launcher's width while each batch's estimate fits in the
        budget left, less what `reserve(job)` keeps for a later stage (asked again before each
        batch: it follows the rates as they are measured). Returns (outcomes, jobs not run)."""
        p, outcomes = max(1, self.runner.parallel), []
        for i in range(0, len(jobs), p):
            chunk = jobs[i:i + p]
            wall = budgets.batch_wall([self._cost(j) for j in chunk], p)
            keep = max((reserve(j) for j in chunk), default=0.0) if reserve else 0.0
            if wall > self.budget.left() - keep:
                return outcomes, jobs[i:]
            t0 = self.budget.clock()
            got = self.runner.run(chunk)
            took = self.budget.clock() - t0
            stage.spent += took
            stage.jobs += len(chunk)
            self._learn(got, took, p)
            outcomes += got
        return outcomes, []

    def _learn(self, outcomes: list[Outcome], wall: float, parallel: int) -> None:
        trained, launched = 0.0, 0
        for o in outcomes:
            if not o.ok:
                self.answer.failed.append(o)
            if o.run_id is None or o.reused:
                continue
            before_epochs, before_s = self._trained.get(o.run_id, (0, 0.0))
            if o.ok and o.epochs > before_epochs:
                self.rates.learn(o.job.recipe.model, o.job.recipe.strategy, o.epochs - before_epochs,
                                 o.train_seconds - before_s)
            trained += max(0.0, o.train_seconds - before_s)
            launched += 1
            self._trained[o.run_id] = (o.epochs, o.train_seconds)
        if launched:
            self.rates.learn_overhead(wall, trained, launched, parallel)

    def _skipped(self, jobs: list[Job], why: str) -> None:
        for j in jobs:
            seed = f" seed={j.seed}" if j.seed is not None else ""
            self.answer.not_tried.append(f"{j.stage}: {j.recipe.label}{seed} to epoch {j.stop_after}: {why}")

    def _stage(self, name: str, jobs: list[Job], note: str) -> Stage:
        stage = Stage(name, self.estimate(jobs))
        self.answer.stages.append(stage)
        self.say(f"[{name}] {note}; estimated {budgets.fmt(stage.estimated)}, "
                 f"budget left {budgets.fmt(self.budget.left())}")
        return stage

    # --- the stages -------------------------------------------------------------------------

    def screen(self) -> None:
        s = self.s
        self.say(f"[screen] {len(s.models)} backbone(s): one frozen pass each, LogME and k-NN")
        for m in s.models:
            row = {"prior": self.runner.prior(m)}
            try:
                row.update(self.runner.scores(m))
                if row.get("feature_cache") == "miss":
                    self.rates.frozen_pass[m] = row["seconds"]
            except Exception as e:  # one backbone's failure is its row, and it leaves the answer
                row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            self.answer.screen[m] = row
            prior = "?" if row["prior"] is None else f"{row['prior']:.1f}"
            self.say(f"  {m}: " + (f"error: {row['error']}" if "error" in row else
                                   f"LogME {row['logme']:.3f}  k-NN {row['knn_acc']:.3f}  ImageNet top-1 {prior}  "
                                   f"({row['seconds']:.1f}s, cache {row['feature_cache']})"))
        models = [m for m in s.models if "error" not in self.answer.screen[m]]
        if space.HEAD not in s.strategies:
            return
        grid = space.head_grid(models, self.recipes, s.base_weight_decay)
        per_model = {m: tuple(r for r in grid if r.model == m) for m in models}
        jobs = [Job("screen", heads[0], s.epochs, s.epochs, seed=seed, grid=heads)
                for m, heads in per_model.items() for seed in s.seeds]
        k = max(map(len, per_model.values()), default=0)
        stage = self._stage("screen", jobs, f"the head's lr x weight decay ({k} settings) x {len(s.seeds)} seeds per "
                                            "backbone: each seed one freeze run training every setting at once "
                                            "on the cached features")
        outcomes, skipped = self.launch(jobs, stage)
        self._skipped(skipped, "the budget ran out in the screen")
        self.answer.heads = self._by_setting(outcomes)
        for m in models:
            best = best_head([o for o in self.answer.heads if o.job.recipe.model == m])
            if best is not None:
                self.answer.screen[m]["probe"] = best.val_acc
                self.answer.screen[m]["probe_lr"] = best.job.recipe.lr

    def _by_setting(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Each head setting's outcome: its val acc and loss averaged over the seeds that ran it
        (one seed's pick on a small val split is mostly noise), with the first seed's run."""
        found: dict = {}
        for o in outcomes:
            if o.ok:
                for recipe, (acc, loss) in o.heads.items():
                    if acc is not None:
                        found.setdefault(recipe, []).append((o, acc, loss))
        out = []
        for recipe, seen in found.items():
            first = seen[0][0]
            losses = [loss for _, _, loss in seen if loss is not None]
            out.append(Outcome(Job("screen", recipe, first.job.epochs, first.job.stop_after), first.run_id, True,
                               sum(acc for _, acc, _ in seen) / len(seen), first.epochs, first.train_seconds,
                               first.n_val, val_loss=sum(losses) / len(losses) if losses else None))
        return out

    def race(self) -> list[Outcome]:
        """The full-length outcomes of the race's survivors."""
        s, a = self.s, self.answer
        models = [m for m in s.models if "error" not in a.screen.get(m, {})]
        grid = space.race_grid(models, s.strategies, self.recipes, s.base_weight_decay)
        trials: dict = {r: None for r in self._order(grid)}
        alive, done = list(trials), 0
        for i, rung in enumerate(a.rungs):
            if not alive:
                break
            jobs = [Job("race", r, s.epochs, rung, run_id=None if trials[r] is None else trials[r].run_id)
                    for r in alive]
            stage = self._stage(f"race {i + 1}/{len(a.rungs)}", jobs,
                                f"{len(jobs)} trial(s) to epoch {rung} of {s.epochs}")
            outcomes, skipped = self.launch(jobs, stage, self._keep)
            kept = budgets.fmt(self.reserve())
            self._skipped(skipped, f"the budget ran out at rung {rung} (kept {kept} to confirm)")
            if skipped:
                self.say(f"  {len(skipped)} of {len(jobs)} trial(s) do not fit in the "
                         f"{budgets.fmt(self.budget.left())} left, {kept} of it kept to confirm "
                         "a finalist: not raced further")
            for j in skipped:
                a.dropped[j.recipe] = f"not run to rung {rung}: budget"
                if trials[j.recipe] is not None:  # its run stopped at the rung before, tagged so
                    self.runner.note(trials[j.recipe], f"not continued to rung {rung}: the budget ran out")
            scores = {}
            for o in outcomes:
                a.race.setdefault(o.job.recipe, []).append(o)
                trials[o.job.recipe] = o if o.run_id else trials[o.job.recipe]
                scores[o.job.recipe] = o.val_acc if o.ok else None
                if not o.ok:
                    a.dropped[o.job.recipe] = f"failed at rung {rung}: {o.error}"
            done = rung
            if i == len(a.rungs) - 1:
                alive = [r for r, v in scores.items() if v is not None]
                break
            alive, out = schedule.promote(scores, s.eta)
            cut = min((scores[r] for r in alive), default=None)
            for r in out:
                if scores[r] is None:
                    continue
                why = (f"eliminated at rung {rung} of {s.epochs}: val acc {scores[r]:.4f} below the "
                       f"top 1/{s.eta} (cutoff {cut:.4f})")
                a.dropped[r] = why
                self.runner.note(trials[r], why)
        if done < s.epochs:
            for r in alive:
                a.dropped.setdefault(r, f"stopped at epoch {done}: the budget did not reach {s.epochs}")
            return []
        return [trials[r] for r in alive]

    def _order(self, recipes: list[Recipe]) -> list[Recipe]:
        """Round robin over (backbone, strategy), backbones by their tuned probe: when the budget
        cuts a rung short, every strategy of the likeliest backbone has had a trial first."""
        probe = {m: row.get("probe", row.get("logme", 0.0)) or 0.0 for m, row in self.answer.screen.items()}
        groups: dict = {}
        for r in sorted(recipes, key=lambda r: -probe.get(r.model, 0.0)):
            groups.setdefault((r.model, r.strategy), []).append(r)
        out, lists = [], list(groups.values())
        for i in range(max(map(len, lists), default=0)):
            out += [g[i] for g in lists if i < len(g)]
        return out

    def finalists(self, candidates: list[Outcome]) -> list[Outcome]:
        """The best by val, every candidate whose val interval reaches it, and the cheapest."""
        ok = sorted((o for o in candidates if o.ok and o.val_acc is not None), key=lambda o: -o.val_acc)
        if not ok:
            return []
        best = ok[0]

        def reaches(o: Outcome) -> bool:
            if o.n_val <= 0:
                return o.val_acc >= best.val_acc
            k = round(o.val_acc * o.n_val)
            return binomtest(k, o.n_val).proportion_ci(self.s.confidence).high >= best.val_acc

        n = self.s.max_finalists
        chosen = [o for o in ok if o is best or reaches(o)][:max(1, n - 1 if n > 1 else 1)]
        cheapest = min(ok, key=lambda o: (self.rates.run_seconds(o.job.recipe.model, o.job.recipe.strategy,
                                                                 self.s.epochs), -o.val_acc))
        if cheapest not in chosen and len(chosen) < n:
            chosen.append(cheapest)
        return chosen

    def confirm(self, finalists: list[Outcome]) -> None:
        s, a = self.s, self.answer
        jobs = [Job("confirm", o.job.recipe, s.epochs, s.epochs, seed=seed, test=True, tuned=self.how_tuned(o.job))
                for o in finalists for seed in s.seeds]
        stage = self._stage("confirm", jobs, f"{len(finalists)} finalist(s) x {len(s.seeds)} seeds at "
                                             f"{s.epochs} epochs, test evaluated once per run")
        outcomes, skipped = self.launch(jobs, stage)
        self._skipped(skipped, "the budget ran out in the confirmation")
        a.confirmed = outcomes

    def how_tuned(self, job: Job) -> str:
        """How a finalist's recipe was chosen, for the verdict to say beside it."""
        r, a = job.recipe, self.answer
        if job.stage == "screen":
            n = len({o.job.recipe for o in a.heads if o.job.recipe.model == r.model})
            seeds = len(self.s.seeds)
            return (f"tuned: the best of {n} head settings (lr x weight decay) by mean val acc over {seeds} seeds "
                    "in the screen" if n > 1 else "not tuned: its grid has one head setting")
        n = len({x for x in a.race if x.model == r.model and x.strategy == r.strategy})
        rungs = ", ".join(map(str, a.rungs))
        return (f"tuned: the best of {n} learning rates by val acc, successive halving at epochs {rungs}" if n > 1
                else "not tuned: its grid has one learning rate")

    def _confirming(self, cost: float) -> float:
        return budgets.batch_wall([cost] * len(self.s.seeds), max(1, self.runner.parallel))

    def reserve(self) -> float:
        """What confirming one finalist (a typical raced recipe, every seed) will cost, kept aside
        while the race runs: a race that leaves nothing to confirm answers nothing."""
        s = self.s
        strategies = [x for x in s.strategies if x != space.HEAD] or [space.HEAD]
        costs = sorted(self.rates.run_seconds(m, x, s.epochs) for m in s.models for x in strategies)
        return self._confirming(costs[len(costs) // 2]) if costs else 0.0

    def floor(self) -> float:
        """What confirming the best tuned head will cost: kept whatever else happens, so a short
        budget still ends in a confirmed answer (0 without one)."""
        if not any(o.ok for o in self.answer.heads):
            return 0.0
        return max(self._confirming(self.rates.run_seconds(m, space.HEAD, self.s.epochs))
                   for m in {o.job.recipe.model for o in self.answer.heads})

    def _keep(self, job: Job) -> float:
        """The budget a race trial must leave: the full reserve once its strategy's epoch rate is
        measured; before, only the floor. A first trial measures the rate the guess stood in for
        (a guess from the frozen pass can be several times off either way), so a budget that the
        guess says is too short still races each strategy once before giving up on it."""
        r = job.recipe
        return self.reserve() if self.rates.measured(r.model, r.strategy) else self.floor()

    def run(self) -> Answer:
        a = self.answer
        self.screen()
        survivors = self.race()
        best_heads = [best_head([o for o in a.heads if o.job.recipe.model == m])
                      for m in dict.fromkeys(o.job.recipe.model for o in a.heads)]
        a.finalists = self.finalists([*best_heads, *survivors])
        self.say("[finalists] " + ("; ".join(f"{o.job.recipe.label} (val {o.val_acc:.4f})" for o in a.finalists)
                                   or "none: no trial finished at full length"))
        if a.finalists:
            self.confirm(a.finalists)
        return a

