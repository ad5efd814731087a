"""The answer sweeper's body (`hydra_plugins.tl_answer` is its thin Hydra face): settings from
`hydra.sweeper.*` and the recipes file, the race over the configured launcher, then the report,
the verdict over the confirmed runs, and the `tl-train` line of the winner."""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tl.answer import budget as budgets
from tl.answer import hydra_jobs, outcome, report, space
from tl.answer.race import Race, Settings
from tl.errors import ConfigError, TLError
from tl.runtime import cost
from tl.sweeps import launchers
from tl.training.strategies import STRATEGIES

log = logging.getLogger(__name__)


def say(line: str) -> None:
    print(line, flush=True)


def offline_models() -> list[str]:
    """Every pretrained preset whose weights are on this machine (`tl models`)."""
    from tl.models import catalog  # reads conf/model and torch's hub folder: only when asked

    return catalog.offline_presets()


def _pick(params: dict, recipes: dict, key: str) -> int:
    value = params.get(key)
    value = recipes.get(key) if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"hydra.sweeper.{key}={value!r} must be a positive integer")
    return value


def settings(params: dict, recipes: dict, config: DictConfig) -> Settings:
    models = list(params.get("models") or offline_models())
    strategies = list(params.get("strategies") or [])
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise ConfigError(f"hydra.sweeper.strategies={strategies}: choose from {', '.join(STRATEGIES)}")
    if not models:
        raise ConfigError("hydra.sweeper.models is empty and no preset has weights on this machine: "
                          "name them, e.g. hydra.sweeper.models=[efficientnet_lite0,resnet18_scratch] (tl models)")
    seed = int(config.trainer.seed)
    n_seeds = _pick(params, recipes, "seeds")
    return Settings(models, strategies, _pick(params, recipes, "epochs"), _pick(params, recipes, "min_epochs"),
                    _pick(params, recipes, "eta"), [seed + k for k in range(n_seeds)],
                    _pick(params, recipes, "max_finalists"), float(config.optimizer.get("weight_decay") or 0.0))


def parallel(params: dict, config: DictConfig) -> int:
    if params.get("max_batch_size"):
        return int(params["max_batch_size"])
    kind = launchers.kind(config.hydra.launcher)
    if kind == "joblib":
        n = int(config.hydra.launcher.get("n_jobs") or 1)
        import os

        return n if n > 0 else max(1, (os.cpu_count() or 1) + 1 + n)
    return 1


def run(params: dict, arguments: list[str], launcher, loader, config: DictConfig):
    """The answer; a wrong setting ends it before any work with the message (exit status 2)."""
    try:
        params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                  for k, v in dict(params).items()}
        fixed = hydra_jobs.check_overrides(arguments)
        recipes = space.load_recipes(params.get("recipes") or "default", params.get("lr"))
        s = settings(params, recipes, config)
        space.head_grid(s.models, recipes, s.base_weight_decay) if space.HEAD in s.strategies else None
        space.race_grid(s.models, s.strategies, recipes, s.base_weight_decay)  # every grid checked now
        seconds = budgets.parse(params.get("budget") or "30m")
        runner = hydra_jobs.HydraRunner(launcher, loader, config, fixed, recipes.get("imagenet_top1") or {},
                                        parallel(params, config), params.get("resume"))
    except TLError as e:
        print(f"tl answer: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    # The budget counts from this process's start: its imports and the store's set-up are the user's wait too.
    budget = budgets.Budget(seconds, time.perf_counter, cost.process_start())
    say(f"tl answer: {len(s.models)} backbone(s) x {len(s.strategies)} strateg(ies), {s.epochs}-epoch schedule, "
        f"budget {budgets.fmt(seconds)}, {runner.parallel} job(s) at a time (parent run {runner.parent})")
    race = Race(s, recipes, runner, budget, say)
    ok = False
    try:
        answer = race.run()
        ok = bool(answer.confirmed) and all(o.ok for o in answer.confirmed)
    finally:
        runner.finish_confirm(ok)
    _log_report(runner, answer, race, seconds, budget.spent())
    _conclude(runner, answer, config)
    if answer.failed:
        # As a sweep whose job failed: exit status 1 (tl.train.main still ends the parent run,
        # FAILED, listing the failed runs), after the answer without them.
        raise SystemExit(1)
    return answer


def _log_report(runner, answer, race, seconds: float, spent: float) -> None:
    with tempfile.TemporaryDirectory(prefix="tl-answer-") as tmp:
        files = report.write(Path(tmp), answer, race.rates, seconds, spent)
        for f in files:
            runner.client.log_artifact(runner.parent, str(f), report.ARTIFACT_DIR)
    runner.client.set_tag(runner.parent, "tl.answer.spent_seconds", f"{spent:.0f}")
    say(f"\n[budget] spent {budgets.fmt(spent)} of {budgets.fmt(seconds)}: "
        + ", ".join(f"{st.name} {budgets.fmt(st.spent)} (est. {budgets.fmt(st.estimated)})" for st in answer.stages))
    if answer.failed:
        say(f"[failed] {len(answer.failed)} trial(s) failed; the race went on without them:")
        for o in answer.failed:
            say(f"  {o.job.stage} {o.job.recipe.label}: {o.error} (run {o.run_id or '-'})")
    if answer.not_tried:
        say(f"[not tried] {len(answer.not_tried)} job(s), for lack of budget:")
        for t in answer.not_tried[:20]:
            say(f"  {t}")
    say("\n[ranking] did the screen predict the outcome?")
    for line in report.ranking_lines(answer)[2:]:
        say("  " + line.strip("|").replace(" | ", "  "))
    say(f"Report: answer/answer.md, race.png, front.png, ranking.png on parent run {runner.parent}")


def winner(answer):
    """The confirmed recipe with the best mean test acc (val without a test split), and its first run."""
    groups: dict = {}
    for o in answer.confirmed:
        value = o.test_acc if o.test_acc is not None else o.val_acc
        if o.ok and value is not None:
            groups.setdefault(o.job.recipe, []).append((value, o))
    if not groups:
        return None, None
    recipe = max(groups, key=lambda r: sum(v for v, _ in groups[r]) / len(groups[r]))
    return recipe, groups[recipe][0][1]


def _conclude(runner, answer, config: DictConfig) -> None:
    if runner.confirm_parent is None or not answer.confirmed:
        say("\nNo finalist was confirmed, so there is no verdict: raise hydra.sweeper.budget (tl answer --budget).")
        return
    say("")
    outcome.verdict(runner.uri, str(config.tracking.experiment), runner.confirm_parent)
    recipe, run = winner(answer)
    if run is None:
        return
    tags = runner.client.get_run(run.run_id).data.tags
    runner.client.set_tag(runner.parent, "tl.answer.winner", recipe.label)
    say(f"\nThe answer: {recipe.label}, {answer.settings.epochs} epochs (tuned per strategy; "
        f"{len(answer.settings.seeds)} seeds confirmed).")
    say(f"Reproduce the winner:\n  tl-train {tags.get('tl.overrides', '')}\n  (or: tl reproduce {run.run_id})")
