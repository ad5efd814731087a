"""The answer's report: what each stage cost against its estimate, every trial and where it
stopped, the finalists, the ranking scores against the outcome, what was not tried; and its
figures (race curves with each trial's last rung, the accuracy-cost front, scores against outcome). Logged under
`answer/` of the sweep's parent run."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from tl.answer import budget as budgets
from tl.answer import outcome

ARTIFACT_DIR = "answer"


def _fmt(v, spec=".4f") -> str:
    return "-" if v is None else format(v, spec)


def screen_lines(answer) -> list[str]:
    out = ["| backbone | ImageNet top-1 | LogME | k-NN acc | tuned probe val | probe lr |", "|---|---|---|---|---|---|"]
    for m, r in answer.screen.items():
        if "error" in r:
            out.append(f"| {m} | {_fmt(r.get('prior'), '.1f')} | error: {r['error']} | | | |")
        else:
            out.append(f"| {m} | {_fmt(r.get('prior'), '.1f')} | {_fmt(r.get('logme'), '.3f')} | "
                       f"{_fmt(r.get('knn_acc'))} | {_fmt(r.get('probe'))} | {_fmt(r.get('probe_lr'), 'g')} |")
    return out


def head_lines(answer) -> list[str]:
    """Each head setting of the screen, its val acc and loss averaged over the seeds."""
    out = ["| head setting | mean val acc | mean val loss there |", "|---|---|---|"]
    for o in sorted(answer.heads, key=lambda o: (o.job.recipe.model, -o.val_acc)):
        out.append(f"| {o.job.recipe.label} | {_fmt(o.val_acc)} | {_fmt(o.val_loss)} |")
    return out


def race_lines(answer) -> list[str]:
    out = ["| trial | " + " | ".join(f"val @ {r}" for r in answer.rungs) + " | outcome |",
           "|---|" + "---|" * (len(answer.rungs) + 1)]
    for recipe, runs in answer.race.items():
        at = {o.job.stop_after: o for o in runs}
        cells = [_fmt(at[r].val_acc) if r in at else "" for r in answer.rungs]
        fate = answer.dropped.get(recipe, "reached the last rung")
        out.append(f"| {recipe.label} | " + " | ".join(cells) + f" | {fate} |")
    return out


def confirm_lines(answer) -> list[str]:
    out = ["| finalist | seed | val acc | test acc | run |", "|---|---|---|---|---|"]
    for o in answer.confirmed:
        out.append(f"| {o.job.recipe.label} | {o.job.seed} | {_fmt(o.val_acc)} | {_fmt(o.test_acc)} | "
                   f"{o.run_id or '-'}{'' if o.ok else ' (' + o.error + ')'} |")
    return out


def ranking_lines(answer) -> list[str]:
    out = ["| score | backbones | Kendall tau | top-1 regret (points) | its pick |", "|---|---|---|---|---|"]
    for r in outcome.ranking_check(answer):
        out.append(f"| {r['score']} | {r['n']} | {_fmt(r['tau'], '+.2f')} | {_fmt(r['regret'], '.1f')} | "
                   f"{r.get('pick', '-')} |")
    return out


def markdown(answer, budget_seconds: float, spent: float) -> str:
    s = answer.settings
    lines = [
        "# tl answer", "",
        f"Budget {budgets.fmt(budget_seconds)}, spent {budgets.fmt(spent)}. Every trial ran the same "
        f"{s.epochs}-epoch schedule; rungs at epochs {', '.join(map(str, answer.rungs))} (keep the top 1/{s.eta}); "
        f"each strategy at its own learning rates; {len(s.seeds)} seeds per finalist, test evaluated once per "
        "confirmed run and nowhere else.", "",
        "## Stages", "", "| stage | jobs | estimated | spent |", "|---|---|---|---|",
        *(f"| {st.name} | {st.jobs} | {budgets.fmt(st.estimated)} | {budgets.fmt(st.spent)} |"
          for st in answer.stages), "",
        "## Screen", "", *screen_lines(answer), "",
        f"Head settings, over {len(s.seeds)} seeds (the best mean val acc goes on; among equals the lower "
        "val loss):", "", *head_lines(answer), "",
        "## Race", "", *race_lines(answer), "",
        "## Finalists", "", *(f"- {o.job.recipe.label}: val {_fmt(o.val_acc)}" for o in answer.finalists), "",
        "## Confirmed", "", *confirm_lines(answer), "",
        "## Did the screen predict the outcome?", "",
        "Outcome per backbone: its best confirmed mean test acc (val without a test split); backbones "
        "not confirmed: their best val acc at full length.", "", *ranking_lines(answer), "",
    ]
    if answer.failed:
        lines += ["## Failed trials", "", *(f"- {o.job.stage} {o.job.recipe.label}: {o.error} (run {o.run_id})"
                                            for o in answer.failed), ""]
    if answer.not_tried:
        lines += ["## Not tried", "", *(f"- {t}" for t in answer.not_tried), ""]
    return "\n".join(lines)


def race_figure(answer) -> Figure:
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    for recipe, runs in answer.race.items():
        last = max(runs, key=lambda o: o.epochs)
        if not last.curve:
            continue
        xs, ys = zip(*last.curve)
        line, = ax.plot(xs, ys, marker=".", label=recipe.label)
        if last.epochs < answer.settings.epochs:
            ax.plot([xs[-1]], [ys[-1]], "x", color=line.get_color(), markersize=9)
    for r in answer.rungs:
        ax.axvline(r, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val acc")
    ax.set_title("race: val curves; x = the rung where a trial stopped")
    if answer.race:
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig


def front_figure(answer, rates) -> Figure:
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    full = [o for o in [*answer.heads, *(x for runs in answer.race.values() for x in runs)]
            if o.ok and o.val_acc is not None and o.epochs >= answer.settings.epochs]
    for o in full:
        cost = rates.run_seconds(o.job.recipe.model, o.job.recipe.strategy, answer.settings.epochs)
        final = o in answer.finalists
        ax.scatter([cost], [o.val_acc], color="C3" if final else "C0", s=30 if final else 12)
        if final:
            ax.annotate(o.job.recipe.label, (cost, o.val_acc), fontsize=6)
    ax.set_xlabel("estimated seconds per full run")
    ax.set_ylabel("best val acc")
    ax.set_title("accuracy against cost (red: finalists)")
    fig.tight_layout()
    return fig


def ranking_figure(answer) -> Figure:
    """Each screen score against the outcome, one point per backbone."""
    result = outcome.per_backbone(answer)
    fig = Figure(figsize=(3 * len(outcome.SCORES), 3.2))
    for i, (key, label) in enumerate(outcome.SCORES.items()):
        ax = fig.add_subplot(1, len(outcome.SCORES), i + 1)
        pts = [(row[key], result[m], m) for m, row in answer.screen.items() if row.get(key) is not None and m in result]
        for x, y, m in pts:
            ax.scatter([x], [y], s=14)
            ax.annotate(m, (x, y), fontsize=6)
        ax.set_xlabel(label, fontsize=8)
        if i == 0:
            ax.set_ylabel("outcome", fontsize=8)
    fig.suptitle("screen scores against the outcome (one point per backbone)", fontsize=9)
    fig.tight_layout()
    return fig


def write(folder: Path, answer, rates, budget_seconds: float, spent: float) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / "answer.md", folder / "race.png", folder / "front.png", folder / "ranking.png"]
    files[0].write_text(markdown(answer, budget_seconds, spent), encoding="utf-8")
    race_figure(answer).savefig(files[1], dpi=110)
    front_figure(answer, rates).savefig(files[2], dpi=110)
    ranking_figure(answer).savefig(files[3], dpi=110)
    return files
