"""A run's checkpoints: `last.pt` after every epoch (where `+resume=RUN_ID` continues from)
and `best.pt` (the best model so far).

Both are artifacts of the run, under `checkpoints/`, so the run id alone finds them. With a
local artifact store (the default) they are written there in place; with a remote one they
are written to a local folder and uploaded after each write. Every write is atomic: a temp
file in the same folder, then `os.replace`, so a kill mid-write leaves the previous file.

A run that trains only a head on cached features (`freeze`) changes nothing else: its
checkpoints hold the head's tensors (under their full names) with `model_scope: head` and the
backbone's identity, not a copy of the unchanged backbone per epoch.
"""

from __future__ import annotations

import copy
import logging
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from tl.errors import ConfigError
from tl.models.weights import load_into
from tl.runtime import seeding
from tl.runtime.io import atomic_save, load_tensors

log = logging.getLogger(__name__)

FOLDER, LAST, BEST = "checkpoints", "last.pt", "best.pt"
FORMAT = 1


@dataclass
class Progress:
    """Where training stands after `epoch` complete epochs."""

    epoch: int = 0
    best: float = -1.0
    best_epoch: int = 0
    seconds: float = 0.0
    phase: int = 0  # the phase (tl.phases) `epoch` trained in: its optimizer is the one saved


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
            "classes": list(classes), **self._model(model),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": seeding.rng_states(loader_generator),
        }

    @staticmethod
    def snapshot(payload: dict) -> dict:
        """A copy that later training steps do not change, to be written later."""
        return copy.deepcopy(payload)

    def write_best(self, payload: dict) -> None:
        self._write(BEST, payload)

    def write_last(self, payload: dict) -> None:
        self._write(LAST, payload)

    def save_best(self, model, epoch: int, val_acc: float, classes: list[str]) -> None:
        self.write_best(self.best(model, epoch, val_acc, classes))

    def save_last(self, progress: Progress, model, optimizer, scheduler, scaler, loader_generator,
                  classes: list[str]) -> None:
        self.write_last(self.last(progress, model, optimizer, scheduler, scaler, loader_generator, classes))

    def _fetch(self) -> None:
        if not self.upload:
            return
        try:
            self.client.download_artifacts(self.run_id, FOLDER, str(self.dir.parent))
        except Exception as e:  # none uploaded yet: the run stopped in its first epoch
            log.info("no checkpoints to download for run %s (%s)", self.run_id, e)

    def restore(self, model, optimizer, scheduler, scaler, loader_generator) -> Progress:
        """Load `last.pt` into freshly built objects; their config (requires_grad, frozen
        modules, learning rates) comes from the run's config, their state from the file. No
        file: the run stopped before its first epoch ended, and starts again at epoch 1."""
        self._fetch()
        path = self.dir / LAST
        if not path.is_file():
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
        log.info("resuming run %s after epoch %d", self.run_id, ckpt["epoch"])
        return Progress(ckpt["epoch"], ckpt["best_val_acc"], ckpt["best_epoch"], ckpt["train_seconds"],
                        ckpt.get("phase", 0))

    def saved_epoch(self) -> int:
        """The last complete epoch `last.pt` holds (0 without one): a resume first rebuilds
        the phase that epoch trained in, so the optimizer state fits what loads it."""
        self._fetch()
        path = self.dir / LAST
        return int(read(path).get("epoch", 0)) if path.is_file() else 0  # restore names what else is amiss

    def finish(self) -> None:
        """A finished run needs no resume point; `best.pt` stays."""
        if not self.upload:
            (self.dir / LAST).unlink(missing_ok=True)
            return
        from mlflow.store.artifact.artifact_repository_registry import (
            get_artifact_repository,
        )

        try:
            get_artifact_repository(self.client.get_run(self.run_id).info.artifact_uri,
                                    tracking_uri=self.client.tracking_uri).delete_artifacts(f"{FOLDER}/{LAST}")
        except Exception as e:  # a store that cannot delete; a team server lets only MANAGE delete
            log.info("finished run %s keeps %s/%s in its artifact store (%s)", self.run_id, FOLDER, LAST, e)
