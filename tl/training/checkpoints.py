"""A run's checkpoints: `last.pt` after every epoch (where `+resume=RUN_ID` continues from)
and `best.pt` (the best model so far).

Both are artifacts of the run, under `checkpoints/`, so the run id alone finds them. With a
local artifact store (the default) they are written there in place; with a remote one they
are written to a local folder and uploaded after each write. Every write is atomic: a temp
file in the same folder, then `os.replace`, so a kill mid-write leaves the previous file.

An epoch commits when its `last.pt` is written (`tl.training.pending` orders the writes): a
new best is first staged as `best.next.pt`, then `last.pt` (carrying every epoch's metric rows
so far) is written, then the staged best becomes `best.pt`, then the metrics are logged. A
resume settles whatever a stop between two of those writes left (`settle`): a staged best of
a committed epoch is kept, one of an uncommitted epoch dropped, and metric rows the store
lacks are logged again from `last.pt`.

A run that trains only a head on cached features (`freeze`) changes nothing else: its
checkpoints hold the head's tensors (under their full names) with `model_scope: head` and the
backbone's identity, not a copy of the unchanged backbone per epoch.
"""

from __future__ import annotations

import copy
import logging
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from tl.errors import ConfigError
from tl.models.weights import load_into
from tl.runtime import seeding
from tl.runtime.io import atomic_save, load_tensors

log = logging.getLogger(__name__)

FOLDER, LAST, BEST, NEXT = "checkpoints", "last.pt", "best.pt", "best.next.pt"
FORMAT = 1


@dataclass
class Progress:
    """Where training stands after `epoch` complete epochs."""

    epoch: int = 0
    best: float = -1.0
    best_epoch: int = 0
    seconds: float = 0.0
    phase: int = 0  # the phase (tl.phases) `epoch` trained in: its optimizer is the one saved
    elapsed: float = 0.0  # wall seconds of every process of the run until this epoch committed
    rows: list = field(default_factory=list)  # (epoch, timestamp ms, metrics) of epochs 1..epoch


def local_dir(artifact_uri: str) -> Path | None:
    """The folder behind a run's artifact URI, or None when artifacts live elsewhere."""
    parsed = urllib.parse.urlparse(artifact_uri)
    if parsed.scheme == "file":
        from mlflow.utils.file_utils import local_file_uri_to_path

        return Path(local_file_uri_to_path(artifact_uri))
    if parsed.scheme == "":  # a plain path
        return Path(artifact_uri)
    return None


def read(path: Path) -> dict:
    try:
        obj = load_tensors(path)
    except Exception as e:
        raise ConfigError(f"checkpoint {str(path)!r} cannot be loaded: {e}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ConfigError(f"checkpoint {str(path)!r} is not a tl resume checkpoint (format {FORMAT})")
    return obj


def load_model(model, ckpt: dict, what: str) -> None:
    """A checkpoint's model state into `model`: all of it, or its head alone."""
    if ckpt.get("model_scope") == "head":
        name = ckpt["head_module"]
        prefix = name + "."
        load_into(model.get_submodule(name), {k[len(prefix):]: v for k, v in ckpt["model"].items()}, what)
    else:
        load_into(model, ckpt["model"], what)


class RunCheckpoints:
    def __init__(self, client, run_id: str, staging: Path, head_only: dict | None = None):
        """`head_only`: {"module": the head's name, "backbone": what identifies the frozen
        backbone} when only that module trains."""
        self.client, self.run_id, self.head_only = client, run_id, head_only
        local = local_dir(client.get_run(run_id).info.artifact_uri)
        self.upload = local is None
        self.dir = (local if local is not None else staging) / FOLDER

    def _write(self, name: str, obj) -> None:
        atomic_save(obj, self.dir / name)
        if self.upload:
            self.client.log_artifact(self.run_id, str(self.dir / name), FOLDER)

    def _model(self, model) -> dict:
        if self.head_only is None:
            return {"model": model.state_dict()}
        name = self.head_only["module"]
        head = model.get_submodule(name).state_dict()
        return {"model": {f"{name}.{k}": v for k, v in head.items()}, "model_scope": "head",
                "head_module": name, "backbone": self.head_only["backbone"]}

    def best(self, model, epoch: int, val_acc: float, classes: list[str]) -> dict:
        """What `best.pt` holds; its tensors are the live model's until `snapshot`."""
        return {**self._model(model), "epoch": epoch, "val_acc": val_acc, "classes": list(classes)}

    def last(self, progress: Progress, model, optimizer, scheduler, scaler, loader_generator,
             classes: list[str]) -> dict:
        """What `last.pt` holds; its tensors are the live model's and optimizer's until `snapshot`."""
        return {
            "format": FORMAT, "epoch": progress.epoch, "best_val_acc": progress.best,
            "best_epoch": progress.best_epoch, "train_seconds": progress.seconds, "phase": progress.phase,
            "total_seconds": progress.elapsed,
            "classes": list(classes), **self._model(model),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": seeding.rng_states(loader_generator),
        }

    @staticmethod
    def snapshot(payload: dict) -> dict:
        """A copy that later training steps do not change, to be written later."""
        return copy.deepcopy(payload)

    def stage_best(self, payload: dict) -> None:
        """A new best, not yet `best.pt`: it becomes that once its epoch commits (`promote_best`)."""
        self._write(NEXT, payload)

    def write_last(self, payload: dict, rows: list | None = None) -> None:
        """The commit point of an epoch: `rows`, the metric rows of every epoch so far, go with it."""
        self._write(LAST, payload if rows is None else {**payload, "metrics": rows})

    def promote_best(self) -> None:
        os.replace(self.dir / NEXT, self.dir / BEST)
        if self.upload:
            self.client.log_artifact(self.run_id, str(self.dir / BEST), FOLDER)

    def save_best(self, model, epoch: int, val_acc: float, classes: list[str]) -> None:
        self.stage_best(self.best(model, epoch, val_acc, classes))
        self.promote_best()

    def save_last(self, progress: Progress, model, optimizer, scheduler, scaler, loader_generator,
                  classes: list[str]) -> None:
        self.write_last(self.last(progress, model, optimizer, scheduler, scaler, loader_generator, classes))

    def fetch(self) -> None:
        """A remote run's checkpoints into the staging folder. A failure to list or download
        them is an error (never taken for "no checkpoint": that would restart the run)."""
        if not self.upload:
            return
        try:
            names = {Path(a.path).name for a in self.client.list_artifacts(self.run_id, FOLDER)}
        except Exception as e:
            raise ConfigError(f"its checkpoints cannot be listed ({type(e).__name__}: {e})") from None
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in (LAST, BEST, NEXT):
            if name not in names:
                continue
            try:  # a single file lands as dst/<name>
                self.client.download_artifacts(self.run_id, f"{FOLDER}/{name}", str(self.dir))
            except Exception as e:
                raise ConfigError(f"its {FOLDER}/{name} cannot be downloaded ({type(e).__name__}: {e})") from None

    def settle(self, epoch: int) -> None:
        """Best files after a stop between two writes of an epoch's commit: a staged best of a
        committed epoch (<= `epoch`, the one `last.pt` holds) becomes `best.pt`; a staged or
        final best of an epoch after it is dropped, since that epoch trains again."""
        staged = self.dir / NEXT
        if staged.is_file():
            if _epoch_of(staged) <= epoch:
                self.promote_best()
            else:
                staged.unlink()
                self._delete(NEXT)  # else a later resume could promote it
        final = self.dir / BEST
        later = _epoch_of(final) if final.is_file() else 0
        if later > epoch:
            log.warning("run %s: dropping %s/%s of epoch %d, after the resume point's epoch %d",
                        self.run_id, FOLDER, BEST, later, epoch)
            final.unlink()
            self._delete(BEST)

    def restore(self, model, optimizer, scheduler, scaler, loader_generator) -> Progress:
        """Load `last.pt` into freshly built objects; their config (requires_grad, frozen
        modules, learning rates) comes from the run's config, their state from the file. No
        file and no epoch logged: the run stopped before its first epoch ended, and starts
        again at epoch 1. No file but logged epochs is an error, never a silent restart."""
        self.fetch()
        path = self.dir / LAST
        if not path.is_file():
            missing_resume_point(self.client, self.run_id)
            self.settle(0)
            log.info("run %s has no %s/%s: starting again at epoch 1", self.run_id, FOLDER, LAST)
            return Progress()
        ckpt = read(path)
        load_model(model, ckpt, f"checkpoint {str(path)!r}")
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise ConfigError(f"checkpoint {str(path)!r}: its optimizer state does not fit the "
                              f"optimizer this config builds ({e})") from None
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt["scaler"] is not None:
            scaler.load_state_dict(ckpt["scaler"])
        seeding.set_rng_states(ckpt["rng"], loader_generator)
        self.settle(int(ckpt["epoch"]))
        log.info("resuming run %s after epoch %d", self.run_id, ckpt["epoch"])
        return Progress(ckpt["epoch"], ckpt["best_val_acc"], ckpt["best_epoch"], ckpt["train_seconds"],
                        ckpt.get("phase", 0), float(ckpt.get("total_seconds", 0.0)), list(ckpt.get("metrics", [])))

    def saved_epoch(self) -> int:
        """The last complete epoch `last.pt` holds (0 without one): a resume first rebuilds
        the phase that epoch trained in, so the optimizer state fits what loads it."""
        self.fetch()
        path = self.dir / LAST
        return int(read(path).get("epoch", 0)) if path.is_file() else 0  # restore names what else is amiss

    def finish(self) -> None:
        """A finished run needs no resume point; `best.pt` stays."""
        (self.dir / NEXT).unlink(missing_ok=True)
        if not self.upload:
            (self.dir / LAST).unlink(missing_ok=True)
            return
        self._delete(LAST)
        self._delete(NEXT)

    def _delete(self, name: str) -> None:
        if not self.upload:
            return
        from mlflow.store.artifact.artifact_repository_registry import (
            get_artifact_repository,
        )

        try:
            get_artifact_repository(self.client.get_run(self.run_id).info.artifact_uri,
                                    tracking_uri=self.client.tracking_uri).delete_artifacts(f"{FOLDER}/{name}")
        except Exception as e:  # a store that cannot delete; a team server lets only MANAGE delete
            log.info("run %s keeps %s/%s in its artifact store (%s)", self.run_id, FOLDER, name, e)


def _epoch_of(path: Path) -> int:
    try:
        return int(load_tensors(path).get("epoch", 0))
    except Exception:  # a torn or foreign file: it cannot be the best of a committed epoch
        return 1 << 30


def logged_epochs(client, run_id: str) -> list[int]:
    return sorted({m.step for m in client.get_metric_history(run_id, "val_acc")})


def missing_resume_point(client, run_id: str) -> None:
    """A run with logged epochs but no `last.pt` cannot continue: training again from epoch 1
    would log every epoch a second time in the same run."""
    epochs = logged_epochs(client, run_id)
    if epochs:
        raise ConfigError(f"it logged epochs {epochs[0]}-{epochs[-1]} but its resume point {FOLDER}/{LAST} "
                          "is gone (deleted, or the run stopped after its last epoch while finishing); "
                          "it cannot continue without logging those epochs twice: start a new run")


def check_resume_point(client, run_id: str) -> None:
    """What a resume needs, checked before the run is touched: `last.pt` present and readable
    (or no epoch logged yet). Raises ConfigError saying why not."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tl-resume-") as tmp:
        ckpts = RunCheckpoints(client, run_id, staging=Path(tmp))
        ckpts.fetch()
        path = ckpts.dir / LAST
        if not path.is_file():
            missing_resume_point(client, run_id)
            return
        read(path)


def relog_missing(client, run_id: str, rows: list) -> int:
    """Log the metric rows `last.pt` holds that the store lacks (a stop between the commit and
    the metrics' write); returns how many epochs had some. Each (epoch, key) is logged once."""
    from tl.tracking import store

    keys = {k for _, _, metrics in rows for k in metrics}
    have = {k: {m.step for m in client.get_metric_history(run_id, k)} for k in keys}
    missing = [(step, ts, {k: v for k, v in metrics.items() if step not in have[k]}) for step, ts, metrics in rows]
    missing = [row for row in missing if row[2]]
    if missing:
        store.log_steps(client, run_id, missing)
    return len(missing)
