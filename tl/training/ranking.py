"""Which backbones are worth training, from one frozen pass each, before a sweep (`tl rank`).

Each backbone (a `conf/model` preset) runs once, frozen, over the dataset, through the same
feature cache as `strategy=freeze` (the same key: a later freeze run of that backbone reuses
the features, and a rank after a freeze run reuses its). Its train features are then scored:
LogME (tl.analysis.transferability) and, as a model-free second opinion, k-NN accuracy from
train to val features. The ranking is logged as an MLflow run (tag `tl.kind=rank`) with its
table, CSV and chart (drawn by tl.analysis.render), ending with the `tl-train -m` line for the
top-k backbones. A backbone that cannot be built (unknown, weights not on this machine offline)
is reported in its row.

`tl compare` then asks whether the ranking held: with a rank run on the same data
(`tl.data_id`), it prints the Spearman correlation of the scores with the sweep's results.
"""

from __future__ import annotations

import difflib
import logging
import shlex
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tl.analysis import render
from tl.data import identity
from tl.errors import ConfigError
from tl.runtime import paths
from tl.tracking import store
from tl.training import frozen, lifecycle
from tl.training.strategies import STRATEGIES

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


@dataclass
class Ranking:
    """A finished ranking: the scores best first, the base config (dataset, tracking), where it
    is logged, its data id, its table and the `tl-train -m` line for the top-k (None: none scored)."""
    scores: list[Score]
    base: DictConfig
    uri: str
    data_id: str
    lines: list[str]
    command: str | None


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


def check_options(top_k, strategies: list[str]) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"--top-k={top_k!r} must be a positive integer")
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise ConfigError(f"--strategies {','.join(strategies)}: use a comma-separated list of {', '.join(STRATEGIES)}")


def compose(preset: str | None, overrides: list[str]) -> DictConfig:
    """The config a `strategy=freeze` run of `model=preset` with `overrides` has (None: the
    default model, for what the overrides alone say: dataset, tracking)."""
    conf = paths.conf_dir()
    if preset is not None and not (conf / "model" / f"{preset}.yaml").is_file():
        names = sorted(p.stem for p in (conf / "model").glob("*.yaml"))
        close = difflib.get_close_matches(preset, names, n=3)
        raise ConfigError(f"no model preset {preset!r}" + (f" (close: {', '.join(close)})" if close else "")
                          + "; list them with: tl models")
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
    return identity.data_id(dataset_cfg)


def score(preset: str, overrides: list[str]) -> Score:
    """One backbone's scores; whatever goes wrong is kept in `error`, never raised."""
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


def rank(args: list[str], tracking_uri: str | None, top_k: int, strategies: list[str],
         starting: Callable[[str], None]) -> Ranking:
    """Score every backbone `args` names (`starting(preset)` before each), best first. Bad
    options, dataset or tracking overrides are refused before any backbone runs."""
    check_options(top_k, strategies)
    presets, overrides = split_overrides(args)
    base = compose(None, overrides)
    uri = tracking_uri or store.resolve_uri(base.tracking)
    scores = []
    for preset in presets:
        starting(preset)
        scores.append(score(preset, overrides))
    scores = ranked(scores)
    return Ranking(scores, base, uri, data_id(base.dataset), render.rank_table(scores, KNN_K),
                   train_command(scores, overrides, top_k, strategies))


def _chart(scores: list[Score], path: Path) -> None:
    render.rank_figure(scores, KNN_K).savefig(path, dpi=110)


def log_run(uri: str, experiment: str, scores: list[Score], dataset_cfg, did: str, lines, command, argv) -> str:
    """The ranking as an MLflow run (tag tl.kind=rank): scores as metrics, table.md, scores.csv
    and scores.png under rank/. It ends FINISHED, or FAILED/KILLED with the error, never RUNNING."""
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
            (folder / "table.md").write_text(render.rank_markdown(lines, command, did))
            (folder / "scores.csv").write_text(render.rank_csv(scores))
            if any(s.logme is not None for s in scores):
                _chart(scores, folder / "scores.png")
            client.log_artifacts(run_id, str(folder), ARTIFACT_DIR)

    lifecycle.to_the_end(client, run_id, body)
    return run_id
