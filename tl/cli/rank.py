"""`tl rank`: which backbones are worth training, from one frozen pass each, before a sweep.

    tl rank dataset=imagefolder dataset.root=PATH models=[efficientnet_lite0,efficientnet_lite2,resnet18_scratch]

Each backbone (a `conf/model` preset) runs once, frozen, over the dataset, through the same
feature cache as `strategy=freeze` (the same key: a later freeze run of that backbone reuses
the features, and a rank after a freeze run reuses its). Its train features are then scored:
LogME (tl.transferability) and, as a model-free second opinion, k-NN accuracy from train to
val features. The ranked table, with seconds per backbone, is printed and logged as an MLflow
run (tag `tl.kind=rank`), ending with the `tl-train -m` line for the top-k backbones. A backbone
that cannot be built (unknown, weights not on this machine offline) is reported in its row.

`tl compare` then asks whether the ranking held: with a rank run on the same data
(`tl.data_id`), it prints the Spearman correlation of the scores with the sweep's results.
"""

from __future__ import annotations

import csv
import io
import logging
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tl.errors import ConfigError

log = logging.getLogger(__name__)

KIND = "rank"
ARTIFACT_DIR = "rank"
KNN_K = 10  # as tl.training.frozen


@dataclass
class Score:
    preset: str           # model=NAME
    model: str = ""       # model.name, as a tl run of it logs it
    pretrained: bool = True
    logme: float | None = None
    knn_acc: float | None = None
    seconds: float = 0.0
    feature_cache: str = ""  # hit | miss
    error: str = ""

    @property
    def key(self) -> str:
        """How the backbone is named in metrics: `<model.name>`, `.scratch` added when not pretrained
        (resnet18 and resnet18_scratch share a model.name)."""
        return self.model + ("" if self.pretrained else ".scratch")

    @property
    def label(self) -> str:
        return self.model + ("" if self.pretrained else " (scratch)")


def parse_models(text: str) -> list[str]:
    """`[a,b]` or `a,b` -> ['a', 'b']."""
    names = [n.strip().strip("'\"") for n in text.strip().strip("[]").split(",")]
    names = [n for n in names if n]
    if not names:
        raise ConfigError("models= is empty: list the presets to rank, e.g. models=[efficientnet_lite0,resnet18]")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"models= names {', '.join(dupes)} more than once")
    return names


def split_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """(the models to rank, the other overrides). Every override applies to every backbone."""
    models, rest = None, []
    for a in args:
        key = a.split("=", 1)[0].lstrip("+")
        if key == "models":
            models = parse_models(a.split("=", 1)[1] if "=" in a else "")
        elif key in ("model", "strategy"):
            raise ConfigError(f"{a}: tl rank sets model= from models=[...] and runs each frozen "
                              "(strategy=freeze); drop it (model.* and strategy.feature_cache.* keys apply to every backbone)")
        else:
            rest.append(a)
    if models is None:
        raise ConfigError("tl rank needs models=[PRESET,...], e.g. models=[efficientnet_lite0,resnet18_scratch] "
                          "(presets: tl models)")
    return models, rest


def compose(preset: str | None, overrides: list[str]):
    """The config a `strategy=freeze` run of `model=preset` with `overrides` has (None: the
    default model, for what the overrides alone say: dataset, tracking)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tl.runtime import paths

    conf = paths.project_root() / "conf"
    if preset is not None and not (conf / "model" / f"{preset}.yaml").is_file():
        import difflib

        names = sorted(p.stem for p in (conf / "model").glob("*.yaml"))
        close = difflib.get_close_matches(preset, names, n=3)
        raise ConfigError(f"no model preset {preset!r}" + (f" (close: {', '.join(close)})" if close else "")
                          + "; list them with: tl models")
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            model = [f"model={preset}"] if preset is not None else []
            return hydra_compose(config_name="train", overrides=[*model, "strategy=freeze", *overrides])
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"the overrides {' '.join(overrides)} do not compose: {e}") from None
    finally:
        GlobalHydra.instance().clear()


def data_id(dataset_cfg) -> str:
    """The `tl.data_id` a run on this dataset records, so a ranking and a sweep of the same data
    meet in `tl compare`."""
    from tl.data import identity

    return identity.data_id(dataset_cfg)


def score(preset: str, overrides: list[str]) -> Score:
    """One backbone's scores; whatever goes wrong is kept in `error`, never raised."""
    from tl.training import frozen

    s, start = Score(preset), time.perf_counter()
    try:
        cfg = compose(preset, overrides)
        s.model, s.pretrained = str(cfg.model.name), bool(cfg.model.pretrained)
        scores = frozen.score(cfg, KNN_K)
        s.logme, s.knn_acc, s.feature_cache = scores.logme, scores.knn_acc, scores.feature_cache
    except Exception as e:  # one backbone's failure is its row, not the end of the ranking
        s.error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        log.debug("ranking %s failed", preset, exc_info=True)
    s.seconds = time.perf_counter() - start
    return s


def ranked(scores: list[Score]) -> list[Score]:
    return sorted(scores, key=lambda s: (s.logme is None, -(s.logme or 0.0)))


def table_lines(scores: list[Score]) -> list[str]:
    header = ["#", "preset", "model", "LogME", f"{KNN_K}-NN val acc", "seconds", "features"]
    body, n = [], 0
    for s in scores:
        if s.logme is not None:
            n += 1
        body.append([str(n) if s.logme is not None else "-", s.preset, s.label,
                     "-" if s.logme is None else f"{s.logme:.4f}",
                     "-" if s.knn_acc is None else f"{s.knn_acc:.4f}", f"{s.seconds:.1f}",
                     s.feature_cache or s.error])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    right = {0, 3, 4, 5}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(header), *map(line, body)]


def sanity_notes(scores: list[Score]) -> list[str]:
    """Scratch backbones should rank below every pretrained one; say so when they do not."""
    ok = [s for s in scores if s.logme is not None]
    pre = [s.logme for s in ok if s.pretrained]
    return [f"note: {s.label} scores above a pretrained backbone, though it has no pretraining: the data may be too "
            "easy or too small to tell them apart" for s in ok if not s.pretrained and pre and s.logme > min(pre)]


def train_command(scores: list[Score], overrides: list[str], top_k: int, strategies: list[str]) -> str | None:
    top = [s.preset for s in scores if s.logme is not None][:top_k]
    if not top:
        return None
    return " ".join(["tl-train -m", f"model={','.join(top)}", f"strategy={','.join(strategies)}",
                     *(shlex.quote(o) for o in overrides)])


def _markdown(scores, lines, command, did) -> str:
    return "\n".join([f"# tl rank on {did}", "", "```", *lines, "```", "",
                      *(["Top-k sweep:", "", "```", command, "```"] if command else [])]) + "\n"


def _csv(scores: list[Score]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["preset", "model", "pretrained", "logme", "knn_acc", "seconds", "feature_cache", "error"])
    for s in scores:
        w.writerow([s.preset, s.model, s.pretrained, s.logme, s.knn_acc, round(s.seconds, 3), s.feature_cache, s.error])
    return buf.getvalue()


def _chart(scores: list[Score], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [s for s in scores if s.logme is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.5 * len(ok) + 1.8), sharey=True)
    labels = [s.label for s in ok][::-1]
    for ax, values, title in ((axes[0], [s.logme for s in ok][::-1], "LogME (higher: better)"),
                              (axes[1], [s.knn_acc for s in ok][::-1], f"{KNN_K}-NN val accuracy")):
        ax.barh(labels, values, color=["#4c72b0" if s.pretrained else "#c44e52" for s in ok][::-1])
        ax.set_title(title)
    fig.suptitle("tl rank: red bars have no pretraining")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def log_run(uri: str, experiment: str, scores: list[Score], dataset_cfg, did: str, lines, command, argv) -> str:
    from omegaconf import OmegaConf

    from tl.tracking import store
    from tl.training import lifecycle

    client = store.prepare_store(uri)
    exp_id = store.experiment_id(client, experiment, uri)
    tags = {"tl.kind": KIND, "tl.data_id": did, "tl.dataset": str(dataset_cfg.name),
            "tl.models": ",".join(s.preset for s in scores), "tl.command": " ".join(["tl rank", *map(shlex.quote, argv)]),
            "tl.git_commit": store.git_commit()}
    run_id = client.create_run(exp_id, run_name=f"rank-{dataset_cfg.name}", tags={k: store.text(v) for k, v in tags.items()}).info.run_id

    def body():
        store.log_params(client, run_id, {f"dataset.{k}": v for k, v in
                                             OmegaConf.to_container(dataset_cfg, resolve=True).items()})
        metrics = {}
        for s in scores:
            if s.logme is not None:
                metrics.update({f"logme.{s.key}": s.logme, f"knn_acc.{s.key}": s.knn_acc})
            metrics[f"seconds.{s.key or s.preset}"] = s.seconds
        store.log_metrics(client, run_id, metrics, step=0)
        with tempfile.TemporaryDirectory(prefix="tl-rank-") as tmp:
            folder = Path(tmp)
            (folder / "table.md").write_text(_markdown(scores, lines, command, did))
            (folder / "scores.csv").write_text(_csv(scores))
            if any(s.logme is not None for s in scores):
                _chart(scores, folder / "scores.png")
            client.log_artifacts(run_id, str(folder), ARTIFACT_DIR)

    lifecycle.to_the_end(client, run_id, body)  # FINISHED, or FAILED/KILLED with the error, never RUNNING
    return run_id


def run(args: list[str], tracking_uri: str | None, top_k: int, strategies: list[str]) -> int:
    """`tl rank`: exit status 0 when at least one backbone was scored, 1 when none could be."""
    from tl.tracking import store
    from tl.training.strategies import STRATEGIES

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"--top-k={top_k!r} must be a positive integer")
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise ConfigError(f"--strategies {','.join(strategies)}: use a comma-separated list of {', '.join(STRATEGIES)}")
    presets, overrides = split_overrides(args)
    base = compose(None, overrides)  # bad dataset or tracking overrides stop here, before any backbone
    uri = tracking_uri or store.resolve_uri(base.tracking)
    scores = []
    for preset in presets:
        print(f"ranking {preset} ...", flush=True)
        scores.append(score(preset, overrides))
    scores = ranked(scores)
    did = data_id(base.dataset)
    lines = table_lines(scores)
    command = train_command(scores, overrides, top_k, strategies)
    print(f"\nBackbones ranked by LogME on {did} ({base.dataset.name}), one frozen pass each:\n")
    print("\n".join(lines))
    for note in sanity_notes(scores):
        print(note)
    run_id = log_run(uri, base.tracking.experiment, scores, base.dataset, did, lines, command, args)
    print(f"\nLogged as run {run_id} (tl.kind=rank) under {ARTIFACT_DIR}/: table.md, scores.csv, scores.png")
    if command is None:
        print("No backbone could be scored: see the errors above.")
        return 1
    print(f"\nTrain the top {min(top_k, sum(s.logme is not None for s in scores))}:\n  {command}")
    return 0
