"""A sweep's runs read back as plain rows: what each run was (backbone, dataset and its splits,
strategy, the overrides that differ, seed) and what it measured. The one owner of a logged run's
identity: `backbone` (source, name, weights, pretrained or scratch) and `data_identity` (the
dataset's content id plus the settings that decide which images land in val and test).

Metrics that are NaN or infinite are read as missing, with the reason kept on the row: they
never reach a mean, a ranking or a plot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from tl.tracking import readback

SWEEP_AXES = {"model", "strategy", "dataset", "dataset.root"}  # shown in their own columns
SEED_KEY = "trainer.seed"
TUNED_TAG = "tl.recipe.tuned"  # set by tl answer on a confirmed run: how its recipe was chosen
# Settings that change which images a run trained, picked its epoch and was tested on.
SPLIT_SETTINGS = ("limit_per_class", "val_fraction", "test_fraction", "split_seed",
                  "splits.train", "splits.val", "splits.test")
FALSE = ("false", "0", "no", "none")
METRICS = ("best_val_acc", "best_epoch", "test_acc", "train_seconds", "total_seconds",
           "feature_pass_seconds")


@dataclass
class Row:
    run_id: str
    run_name: str
    status: str
    model: str  # the backbone's label: name, "(scratch)", and its source where names collide
    strategy: str
    dataset: str  # the dataset's label
    best_val_acc: float | None
    best_epoch: int | None
    final_val_loss: float | None
    train_seconds: float | None
    trainable: int | None
    total: int | None
    varied: str = ""  # other overrides that differ between the sweep's jobs (e.g. optimizer.lr)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    data_key: str = ""  # the dataset's identity, split settings included; default: dataset
    seed: int | None = None
    test_acc: float | None = None
    total_seconds: float | None = None
    backbone: str = ""  # source:name:weights; default: model
    rank_key: str = ""  # the backbone as `tl rank` names it (Backbone.rank_key); default: model
    feature_cache: str | None = None  # hit | miss | off; None: not logged
    feature_pass_seconds: float | None = None  # the frozen backbone pass a cache hit reused
    error: str = ""  # why a metric is missing or the run failed (tag tl.error, or a NaN read)
    nonfinite: dict = field(default_factory=dict)  # metric -> the NaN or inf it logged (read as None)
    split_seed: str | None = None  # dataset.split_seed as logged
    test_images: int | None = None
    lr: str | None = None  # optimizer.lr as logged
    weight_decay: str | None = None  # optimizer.weight_decay as logged
    epochs: int | None = None  # trainer.epochs: the schedule the run was configured for
    tuned: str = ""  # tag tl.recipe.tuned: how tl answer chose this recipe ("" where nothing did)
    data_id: str | None = None  # tag tl.data_id: the content alone
    dataset_params: dict = field(default_factory=dict)  # dataset.* params and tl.cwd, for old runs

    def __post_init__(self):
        self.data_key = self.data_key or self.dataset
        self.backbone = self.backbone or self.model
        self.rank_key = self.rank_key or self.model

    @property
    def label(self) -> str:
        return " / ".join(x for x in (self.model, self.strategy, self.varied) if x)

    @property
    def cost_alone(self) -> float | None:
        """Seconds the run would have taken alone: a feature-cache hit adds back the backbone pass
        it reused (the first run of a sweep paid it for the rest). A resumed run logged before
        total_seconds summed its processes can show less than its (cumulative) train_seconds:
        it costs at least those."""
        if self.total_seconds is None:
            return None
        total = max(self.total_seconds, self.train_seconds or 0.0)
        if self.feature_cache == "hit" and self.feature_pass_seconds is not None:
            return total + self.feature_pass_seconds
        return total


@dataclass(frozen=True)
class Backbone:
    source: str
    name: str
    weights: str  # tag tl.weights; "pretrained"/"none" for runs logged before it
    pretrained: bool

    @property
    def key(self) -> str:
        return f"{self.source}:{self.name}:{self.weights}"

    @property
    def label(self) -> str:
        return self.name + ("" if self.pretrained else " (scratch)")

    @property
    def rank_key(self) -> str:
        """How `tl rank` names it in its metrics: `<model.name>`, `.scratch` when not pretrained."""
        return self.name + ("" if self.pretrained else ".scratch")


def is_pretrained(tags: dict, params: dict) -> bool:
    """Tag tl.pretrained; runs logged before it have only the param model.pretrained (and a
    `model.weights` file counts as pretrained, as in training/identity)."""
    value = tags.get("tl.pretrained")
    if value is None:
        if params.get("model.weights") not in (None, "None", "null", ""):
            return True
        value = params.get("model.pretrained", "true")
    return str(value).strip().lower() not in FALSE


def backbone(tags: dict, params: dict) -> Backbone:
    pretrained = is_pretrained(tags, params)
    name = tags.get("tl.model") or params.get("model.name") or "?"
    weights = tags.get("tl.weights") or ("pretrained" if pretrained else "none")
    return Backbone(params.get("model.source", "?"), name, weights, pretrained)


def _labels(backbones: dict[str, Backbone]) -> dict[str, str]:
    """Per run, the backbone's label; where two different backbones share one (torchvision's
    and timm's resnet18), the source is added, then the weights."""
    out = {}
    for rid, b in backbones.items():
        same = {o.key for o in backbones.values() if o.label == b.label}
        label = b.label
        if len(same) > 1:
            label += f" [{b.source}]"
            if len({o.key for o in backbones.values() if o.label == b.label and o.source == b.source}) > 1:
                label = f"{b.label} [{b.source}, {b.weights}]"
        out[rid] = label
    return out


def _finite(v) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _int(v) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError, OverflowError):
        return None


def overrides(run) -> dict[str, str]:
    pairs = (o.split("=", 1) for o in run.data.tags.get("tl.overrides", "").split() if "=" in o)
    return {k.lstrip("+~"): v for k, v in pairs}


def varied(runs) -> dict[str, str]:
    """Per run, the overrides other than the sweep's axes whose values differ between runs."""
    parsed = {r.info.run_id: overrides(r) for r in runs}
    keys = {k for d in parsed.values() for k in d} - SWEEP_AXES
    differing = sorted(k for k in keys if len({d.get(k) for d in parsed.values()}) > 1)
    return {rid: " ".join(f"{k}={d.get(k, '-')}" for k in differing) for rid, d in parsed.items()}


def _resampled(runs) -> bool:
    """Whether the sweep draws its carved splits anew with each seed (`dataset.resample_splits`,
    or `dataset.split_seed=${trainer.seed}`, which every run logs resolved to its seed)."""
    p = [r.data.params for r in runs]
    if any(str(x.get("dataset.resample_splits", "")).lower() == "true" for x in p):
        return True
    if any("${trainer.seed}" in overrides(r).get("dataset.split_seed", "") for r in runs):
        return True
    seeds = {x.get(SEED_KEY) for x in p}
    return len(seeds) > 1 and all(x.get("dataset.split_seed") == x.get(SEED_KEY) for x in p)


def _split(params: dict, resampled: bool) -> dict[str, str]:
    out = {k: params[f"dataset.{k}"] for k in SPLIT_SETTINGS if f"dataset.{k}" in params}
    if resampled and "split_seed" in out:
        out["split_seed"] = "${trainer.seed}"
    return out


def data_identity(runs) -> dict[str, tuple[str, str]]:
    """Per run, (key, label) of the data it saw: the tag tl.data_id where the run logged it, else
    the dataset name plus its `dataset.root`; then the split settings (limit_per_class, the
    val/test fractions, split_seed, split folder names), so runs tested on different images are
    never one dataset. Labelled by the id (or the name) alone where that is unambiguous in the
    sweep, else with the root folder, and the split settings that differ."""
    resampled = _resampled(runs)
    base = {}
    for r in runs:
        t, p = r.data.tags, r.data.params
        if t.get("tl.data_id"):
            base[r.info.run_id] = (t["tl.data_id"], None, None, _split(p, resampled))
        else:
            name, root = t.get("tl.dataset", "?"), p.get("dataset.root", "None")
            base[r.info.run_id] = (f"{name}:{root}", name, root, _split(p, resampled))
    roots_per_name: dict[str, set] = {}
    splits_per_content: dict[str, list[dict]] = {}
    for content, name, root, split in base.values():
        if name is not None:
            roots_per_name.setdefault(name, set()).add(root)
        splits_per_content.setdefault(content, []).append(split)
    out = {}
    for rid, (content, name, root, split) in base.items():
        if name is None:
            label = content
        elif len(roots_per_name[name]) == 1:
            label = name
        else:
            folders = [Path(x).name for x in roots_per_name[name]]
            short = Path(root).name
            label = f"{name} ({short if folders.count(short) == 1 else root})"
        seen = splits_per_content[content]
        differ = [k for k in SPLIT_SETTINGS if len({s.get(k) for s in seen}) > 1]
        if differ:
            label += " [" + " ".join(f"{k}={split.get(k, '-')}" for k in differ) + "]"
        key = " ".join(f"{k}={v}" for k, v in split.items())
        out[rid] = (f"{content}|{key}" if key else content, label)
    return out


def _error(run, m: dict) -> str:
    tags = run.data.tags
    if tags.get("tl.error"):
        return tags["tl.error"]
    bad = [k for k in METRICS if k in m and not math.isfinite(m[k])]
    return f"{', '.join(bad)} is {'/'.join(sorted({str(m[k]) for k in bad}))}" if bad else ""


def row(client, run, identity: tuple[str, str], model: str, varied_: str) -> Row:
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    f = {k: _finite(m.get(k)) for k in METRICS}
    curves = {k: [(s, v) for s, v in readback.history(client, run.info.run_id, k) if math.isfinite(v)]
              for k in ("val_acc", "val_loss")}
    b = backbone(t, p)
    return Row(
        run_id=run.info.run_id, run_name=run.info.run_name or "", status=run.info.status,
        model=model, strategy=t.get("tl.strategy", "?"), dataset=identity[1],
        best_val_acc=f["best_val_acc"], best_epoch=_int(f["best_epoch"]),
        final_val_loss=curves["val_loss"][-1][1] if curves["val_loss"] else None,
        train_seconds=f["train_seconds"], trainable=_int(p.get("params.trainable")),
        total=_int(p.get("params.total")), varied=varied_, curves=curves, data_key=identity[0],
        seed=_int(p.get(SEED_KEY)), test_acc=f["test_acc"], total_seconds=f["total_seconds"],
        backbone=b.key, rank_key=b.rank_key, feature_cache=t.get("tl.feature_cache") or p.get("runtime.feature_cache"),
        feature_pass_seconds=f["feature_pass_seconds"], error=_error(run, m),
        nonfinite={k: m[k] for k in METRICS if k in m and not math.isfinite(m[k])},
        split_seed=p.get("dataset.split_seed"), test_images=_int(p.get("data.test_images")),
        lr=p.get("optimizer.lr"), weight_decay=p.get("optimizer.weight_decay"),
        epochs=_int(p.get("trainer.epochs")), tuned=t.get(TUNED_TAG, ""), data_id=t.get("tl.data_id"),
        dataset_params={**{k: v for k, v in p.items() if k.startswith("dataset.")},
                        **({"tl.cwd": t["tl.cwd"]} if t.get("tl.cwd") else {})},
    )


def collect(client, parent_run_id: str, experiment_id: str) -> list[Row]:
    """One row per child run of the sweep, in the order the store lists them."""
    runs = readback.children(client, experiment_id, parent_run_id)
    var = varied(runs)
    identity = data_identity(runs)
    labels = _labels({r.info.run_id: backbone(r.data.tags, r.data.params) for r in runs})
    return [row(client, r, identity[r.info.run_id], labels[r.info.run_id], var.get(r.info.run_id, ""))
            for r in runs]


def rank_run(client, experiment_id: str, data_id: str, kind: str = "rank"):
    """The latest `tl rank` run that scored the data `data_id`, or None."""
    found = client.search_runs([experiment_id],
                               filter_string=f"tags.`tl.kind` = '{kind}' and tags.`tl.data_id` = '{data_id}'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None
