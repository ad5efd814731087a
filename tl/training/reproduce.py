"""Train a logged run again and prove its per-epoch metrics match (`tl reproduce RUN_ID`).

The config is recomposed from the primary config plus the run's saved Hydra overrides, then
checked against the run's logged `config.yaml`. Rerunning the saved config as is would bypass
Hydra's composition (lightning-hydra-template#159, hydra#2720); recomposing and comparing is
sound (hydra#3248), and it catches a config that no longer recomposes the same, whether the
checkout's conf/ changed or the store was edited.

A run's record is written by whoever may edit the experiment, so it reproduces only what conf/
can say: saved overrides holding an interpolation (`${oc.env:...}` would be filled in from the
reproducer's environment), changing Hydra itself, or moving a download's source, checksum or
destination away from conf/ are refused, each named, before any run is created.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from tl.errors import TLError
from tl.runtime import configtree, machine, paths
from tl.tracking import readback, redact, store
from tl.training.run import train

CONF_DIR = paths.conf_dir()  # as tl.train's @hydra.main sees it
# Compared per epoch. Timings (epoch_seconds, images_per_second, train_seconds) vary run to run.
PER_EPOCH = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
GPU_TOLERANCE = 1e-4  # GPU kernels may sum in another order from run to run, even when seeded
IGNORED = ("tracking.",)  # where a run logs to is not part of what it computes
MAX_SHOWN = 20

Say = Callable[[str], None]  # where progress (or warnings) go, one line at a time


@dataclass
class Difference:
    metric: str
    epoch: int
    original: float | None
    reproduced: float | None

    def describe(self) -> str:
        if self.original is None or self.reproduced is None:
            missing = "original" if self.original is None else "reproduction"
            return f"{self.metric} at epoch {self.epoch}: missing in the {missing}"
        return (f"{self.metric} at epoch {self.epoch}: original {self.original:.10g}, "
                f"reproduced {self.reproduced:.10g} (difference {self.reproduced - self.original:+.3g})")


def config_differences(logged: dict, recomposed: dict) -> list[str]:
    """`key: logged X, recomposed Y` for every key that differs, tracking.* aside."""
    a, b = configtree.flat(logged), configtree.flat(recomposed)
    keys = sorted(k for k in set(a) | set(b) if not k.startswith(IGNORED))
    return [f"{k}: logged {_show(a, k)}, recomposed {_show(b, k)}"
            for k in keys if k not in a or k not in b or a[k] != b[k]]


def _show(config: dict, key: str) -> str:
    return repr(config[key]) if key in config else "(absent)"


def metric_differences(original: dict[str, list[tuple[int, float]]],
                       reproduced: dict[str, list[tuple[int, float]]], tolerance: float,
                       epochs: set[int] | None = None) -> list[Difference]:
    """Every (metric, epoch) whose values differ by more than `tolerance`, or exist in only one
    run. `epochs` limits the comparison (the epochs an unfinished original got through)."""
    out = []
    for key in PER_EPOCH:
        a, b = dict(original.get(key, [])), dict(reproduced.get(key, []))
        for step in sorted(set(a) | set(b)):
            if epochs is not None and step not in epochs:
                continue
            x, y = a.get(step), b.get(step)
            same = (x is not None and y is not None
                    and (abs(x - y) <= tolerance or (math.isnan(x) and math.isnan(y))))
            if not same:
                out.append(Difference(key, step, x, y))
    return out


def _download(client, run_id: str, path: str, dst: Path) -> Path | None:
    parent = path.rpartition("/")[0] or None
    if path not in {a.path for a in client.list_artifacts(run_id, parent)}:
        return None
    return Path(client.download_artifacts(run_id, path, str(dst)))


def saved_overrides(client, run, dst: Path) -> tuple[list[str], str, Path | None]:
    """The overrides the run was composed from, where they came from, and the directory it was
    launched from (relative paths in its config were relative to it)."""
    run_id = run.info.run_id
    saved = _download(client, run_id, "hydra/overrides.yaml", dst)
    hydra_yaml = _download(client, run_id, "hydra/hydra.yaml", dst)
    cwd = None
    if hydra_yaml is not None:
        cwd = (yaml.safe_load(hydra_yaml.read_text()) or {}).get("hydra", {}).get("runtime", {}).get("cwd")
    if saved is not None:
        return list(yaml.safe_load(saved.read_text()) or []), "hydra/overrides.yaml", Path(cwd) if cwd else None
    if "tl.overrides" in run.data.tags:
        # The tag joins overrides with spaces: exact unless a value itself holds a space.
        return run.data.tags["tl.overrides"].split(), "the tl.overrides tag", None
    raise TLError(f"run {run_id} has neither hydra/overrides.yaml nor a tl.overrides tag: it was "
                  "not logged by tl, so there is nothing to recompose its config from")


def _key_value(override: str) -> tuple[str, str | None]:
    key, eq, value = override.partition("=")
    return key.lstrip("+~"), (value if eq else None)


def refusals(overrides: list) -> list[str]:
    """`override: why` for each saved override a reproduction will not run."""
    out, fetched = [], []
    for o in overrides:
        if not isinstance(o, str):
            out.append(f"{o!r}: not a key=value override")
        elif redact.INTERPOLATION.search(o):
            out.append(f"{o}: holds an interpolation, which would be filled in from the environment "
                       "(or config) of whoever reproduces the run")
        elif _key_value(o)[0].startswith(("hydra.", "hydra/")):
            out.append(f"{o}: changes Hydra itself (launcher, callbacks, output), not what the run computes")
        elif _key_value(o)[0] in ("dataset.url", "dataset.content_sha256", "dataset.root"):
            fetched.append(o)
    if fetched:
        out += _moved_downloads(overrides, fetched)
    return out


def _moved_downloads(overrides: list[str], fetched: list[str]) -> list[str]:
    """Overrides that point a dataset tl downloads or writes itself (its conf/ file gives it a
    root) at another source, checksum or folder. A verified zip download (a `url`) into a
    folder that already exists writes nothing, so that folder may differ from conf/'s."""
    base = recompose([o for o in overrides if not _key_value(o)[0].startswith("dataset.")])
    ds = base.dataset
    name = ds.get("name", "?")
    out = []
    for o in fetched:
        key, value = _key_value(o)
        leaf = key.split(".", 1)[1]
        default = ds.get(leaf) if leaf in ds and not OmegaConf.is_missing(ds, leaf) else None
        if value == str(default) or (leaf == "root" and default is None):  # imagefolder: only read
            continue
        if leaf == "root":
            if "url" in ds and value and Path(os.path.expanduser(value)).is_dir():
                continue
            out.append(f"{o}: tl would download or write the {name} dataset there, not at conf/'s "
                       f"dataset.root={default!r}; put the data at that folder, or rerun the run by hand")
        else:
            out.append(f"{o}: changes the {name} dataset's download ({key}: conf/ says {default!r})")
    return out


def refuse_untrusted(run_id: str, overrides: list, source: str) -> None:
    refused = refusals(overrides)
    if refused:
        raise TLError(
            f"run {run_id}'s saved overrides ({source}) ask for what this checkout's conf/ does not say, "
            "so tl reproduce will not run them:\n  " + "\n  ".join(refused)
            + "\nA run's record is editable by anyone who may edit its experiment. If you trust these "
            "overrides, read the run's tl.command tag and run it yourself.")


def recompose(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="train", overrides=overrides)
    except HydraException as e:
        raise TLError(f"the run's overrides {overrides} no longer compose with this checkout's "
                      f"conf/: {e}") from None
    finally:
        GlobalHydra.instance().clear()


def environment_warnings(tags: dict[str, str]) -> list[str]:
    out = []
    then, now = tags.get("tl.git_commit", "unknown"), store.git_commit()
    if then != now:
        out.append(f"the run was made at git commit {then}; this checkout is at {now}")
    elif now.endswith("-dirty"):
        out.append("this checkout has uncommitted changes (and had some when the run was made): "
                   "the code may differ")
    for pkg, version in store.package_versions().items():
        logged = tags.get(f"tl.version.{pkg}")
        if logged is not None and logged != version:
            out.append(f"{pkg} was {logged} for the run; it is {version} here")
    return out


def runtime_warnings(original: dict[str, str], reproduced: dict[str, str]) -> list[str]:
    keys = ("runtime.device", "runtime.precision", "runtime.cpu", "runtime.torch_threads")
    return [f"{k} was {original[k]!r} for the run; {reproduced.get(k)!r} for the reproduction"
            for k in keys if k in original and original[k] != reproduced.get(k)]


@contextmanager
def _working_dir(path: Path | None):
    before = Path.cwd()
    if path is not None:
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextmanager
def _training_logs():
    """The per-epoch lines on stderr while the reproduction trains (no Hydra sets logging up)."""
    logger, handler = logging.getLogger("tl"), logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def checked_config(client, run, say: Say) -> tuple[DictConfig, Path | None]:
    """The recomposed config, refused unless it equals the logged one (tracking.* aside)."""
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory(prefix="tl-reproduce-") as tmp:
        logged_path = _download(client, run_id, "config.yaml", Path(tmp))
        if logged_path is None:
            raise TLError(f"run {run_id} has no config.yaml artifact: it did not get as far as "
                          "logging its config, so it cannot be reproduced")
        # Unresolved: an interpolation in the record must not be filled in from this environment.
        logged = OmegaConf.to_container(OmegaConf.load(logged_path), resolve=False)
        overrides, source, launch_dir = saved_overrides(client, run, Path(tmp))
    with _working_dir(launch_dir if launch_dir is not None and launch_dir.is_dir() else None):
        refuse_untrusted(run_id, overrides, source)  # relative roots as the reproduction sees them
    cfg = recompose(overrides)
    diffs = config_differences(logged, redact.recorded_config(cfg))
    if diffs:
        raise TLError(
            f"run {run_id}'s logged config.yaml differs from what its saved overrides compose to "
            f"with this checkout's conf/, so re-running would not reproduce it:\n  "
            + "\n  ".join(diffs[:MAX_SHOWN])
            + (f"\n  ... {len(diffs) - MAX_SHOWN} more" if len(diffs) > MAX_SHOWN else "")
            + f"\nEither conf/ changed since the run (it was made at git commit "
            f"{run.data.tags.get('tl.git_commit', 'unknown')}: check that out) or the run's "
            "config.yaml in the store was altered.")
    say(f"  config: recomposed from {len(overrides)} saved overrides ({source}); equal to the "
         "logged config.yaml")
    return cfg, launch_dir


@dataclass
class Outcome:
    """What a reproduction found: its run, the per-epoch values that differ, and what was
    compared (metrics, epochs, tolerance) in words."""
    run_id: str
    differences: list[Difference]
    compared: str

    def first(self) -> Difference:
        return min(self.differences, key=lambda d: (d.epoch, PER_EPOCH.index(d.metric)))


def reproduce(uri: str, run_id: str, tolerance: float | None, say: Say, warn: Say) -> Outcome:
    """Check run `run_id`'s config recomposes to what it logged, train it again as a new run
    tagged `tl.reproduces`, and compare every per-epoch metric. `say` and `warn` get progress
    and warnings as they happen; a run that cannot be reproduced raises TLError."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per small file
    client = readback.open_client(uri)
    original = readback.get_run(client, run_id, uri)
    exp = client.get_experiment(original.info.experiment_id)
    say(f"Reproducing run {run_id} ({original.info.run_name}) of experiment {exp.name!r}")
    if original.info.status != "FINISHED":
        warn(f"the run ended {original.info.status}: only the epochs it logged are compared")
    cfg, launch_dir = checked_config(client, original, say)
    for w in environment_warnings(original.data.tags):
        warn(w)
    if launch_dir is not None and not launch_dir.is_dir():
        warn(f"the run was launched from {launch_dir}, which is not here: relative paths in its "
             "config now resolve from the current directory")
        launch_dir = None

    cfg.tracking.uri = uri
    cfg.tracking.experiment = exp.name
    cfg.tracking.run_name = f"reproduce {original.info.run_name}"
    tags = {"tl.reproduces": run_id,
            **{k: original.data.tags[k] for k in ("tl.overrides", "tl.command") if k in original.data.tags}}
    threads = original.data.params.get("runtime.torch_threads", "")
    with _training_logs(), _working_dir(launch_dir), \
            machine.pinned_threads(int(threads) if threads.isdigit() else None):  # relative paths as then
        new = client.get_run(train(cfg, extra_tags=tags).run_id)
    say(f"Reproduction: run {new.info.run_id} (tag tl.reproduces={run_id})")
    for w in runtime_warnings(original.data.params, new.data.params):
        warn(w)
    return _compare(client, original, new, tolerance)


def _compare(client, original, new, tolerance: float | None) -> Outcome:
    on_gpu = any(r.data.params.get("runtime.device", "cpu").startswith("cuda") for r in (original, new))
    tol = tolerance if tolerance is not None else (GPU_TOLERANCE if on_gpu else 0.0)
    histories = [{k: readback.history(client, r.info.run_id, k) for k in PER_EPOCH} for r in (original, new)]
    epochs = None if original.info.status == "FINISHED" else {s for h in histories[0].values() for s, _ in h}
    diffs = metric_differences(*histories, tol, epochs)
    n_epochs = len({s for h in histories[0].values() for s, _ in h})
    what = f"{', '.join(PER_EPOCH)} over {n_epochs} epochs, tolerance {tol:g}" + (" (exact)" if tol == 0 else "")
    return Outcome(new.info.run_id, diffs, what)
