"""One run, from a composed config to a result in the store: `train(cfg) -> RunResult`.

A new run logs its config and data facts, then trains from epoch 1. A resumed run
(`+resume=RUN_ID`) reopens its own config, checks the facts still hold, restores model,
optimizer, schedule and RNG states from its last checkpoint, and enters the same loop."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from tl.data import ahead
from tl.runtime import allocator, cost, machine, parallel, timeline
from tl.sweeps import sweep
from tl.tracking import redact, store
from tl.training import checkpoints, diagnostics, head_grid, identity, jobs, lifecycle, loop, phases, resume, rungs

log = logging.getLogger("tl")


@dataclass(frozen=True)
class RunResult:
    run_id: str
    best_val_acc: float
    best_epoch: int
    train_seconds: float
    test_acc: float | None = None  # the val-selected model on the test split, when there is one


def train(cfg: DictConfig, extra_tags: dict[str, str] | None = None) -> RunResult:
    """Train one model as `cfg` says, logging everything to MLflow.

    With `resume=RUN_ID` it continues that run instead (see `tl.training.resume`). `extra_tags`
    are set on a new run on top of (and over) its own, e.g. by `tl reproduce`."""
    redact.protect(store.resolve_uri(cfg.tracking))  # before anything is logged or printed
    overrides, out_dir = lifecycle.hydra_job()
    entered = time.perf_counter()
    trace = timeline.begin()
    # The images checked on a spare core while the store opens; a sweep's callback started it
    # before opening the store, and a resumed run reads its own config's data, from the store.
    if not sweep.in_multirun() and not cfg.get("resume"):
        ahead.start(cfg.dataset)
    try:
        return _train(cfg, extra_tags, overrides, out_dir, entered, trace)
    finally:
        ahead.stop()  # a run that failed before its scan leaves no child behind
        allocator.release()


def _train(cfg: DictConfig, extra_tags, overrides, out_dir, entered: float, trace) -> RunResult:
    if cfg.get("resume"):
        with resume.claimed(cfg):
            with timeline.part("store"):
                client, run_id, cfg = resume.reopen(cfg, overrides)
            # A sweep's continued trial (the answer's race) leaves the links to its sweep.
            exp_id = None if sweep.in_multirun() else client.get_run(run_id).info.experiment_id
            # As a new run's: a sweep's job starts here, a single run with its process.
            started = cost.process_start() if exp_id is not None else entered
            if exp_id is not None:
                trace.add("imports", entered - started)
            threads = client.get_run(run_id).data.params.get("runtime.torch_threads", "")
            with machine.pinned_threads(int(threads) if threads.isdigit() else None):  # as it began
                result = lifecycle.to_the_end(client, run_id, lambda: _resumed(cfg, client, run_id, started))
    else:
        with timeline.part("store"):
            client, run_id, exp_id = lifecycle.create(cfg, overrides, extra_tags)
        # A sweep's job starts here; a single run with its process (imports, start-up included).
        started = cost.process_start() if exp_id is not None else entered
        if exp_id is not None:
            trace.add("imports", entered - started)
        result = lifecycle.to_the_end(client, run_id, lambda: _new(cfg, client, run_id, out_dir, started))
    if exp_id is not None:
        print("Open the run in MLflow:\n" + store.ui_hint(store.resolve_uri(cfg.tracking), exp_id, [run_id]))
    return result


def _new(cfg: DictConfig, client, run_id: str, out_dir: Path | None, started: float) -> RunResult:
    # The config first, so even a run that fails at once says what it was.
    store.log_params(client, run_id, store.flatten(cfg))
    grid = head_grid.requested(cfg)
    s = jobs.build(cfg)
    for k, v in identity.tags(cfg, s.model).items():
        client.set_tag(run_id, k, v)
    store.log_params(client, run_id, {
        **s.facts, "runtime.feature_cache": s.job.feature_cache,
        "data.image_cache_mb": round(s.job.cached_bytes / 2**20, 1)})
    rt = s.job.rt
    client.set_tag(run_id, "tl.precision", f"{rt.precision} ({rt.precision_reason})")
    client.set_tag(run_id, "tl.feature_cache", s.job.feature_cache)  # hit, miss or off
    store.log_metrics(client, run_id, {**s.job.report.metrics, "setup_seconds": s.setup_seconds,
                                       **s.job.cost_metrics}, step=0)
    with _staging() as work:
        (work / "config.yaml").write_text(redact.config_yaml(cfg))
        client.log_artifact(run_id, str(work / "config.yaml"))
        if out_dir is not None and (out_dir / ".hydra").is_dir():
            client.log_artifacts(run_id, str(out_dir / ".hydra"), "hydra")
        files = dict(s.job.report.files)
        if s.job.layout:
            files["layout.json"] = json.dumps(s.job.layout, indent=1, ensure_ascii=False)
        for name, content in files.items():
            (work / name).write_text(content, encoding="utf-8")
            client.log_artifact(run_id, str(work / name))
        if grid:  # many heads at once in place of the epoch loop
            return _grid(cfg, client, run_id, s, started, work)
        ckpts = checkpoints.RunCheckpoints(client, run_id, staging=work, head_only=_head_only(s))
        return _fit(cfg, client, run_id, s, ckpts, checkpoints.Progress(), loop.grad_scaler(s.job.loop_rt.precision),
                    started)


def _resumed(cfg: DictConfig, client, run_id: str, started: float) -> RunResult:
    s = jobs.build(cfg)
    resume.check_unchanged(client, run_id, s.facts)  # logged when the run began; they must still hold
    with _staging() as work:
        ckpts = checkpoints.RunCheckpoints(client, run_id, staging=work, head_only=_head_only(s))
        scaler = loop.grad_scaler(s.job.loop_rt.precision)
        # The saved optimizer belongs to the phase of the saved epoch: enter that one first.
        saved_in = phases.at(s.schedule, ckpts.saved_epoch())
        if saved_in is not s.phase:
            s = jobs.enter(s, saved_in)
        with timeline.part("checkpoint"):
            done = ckpts.restore(s.model, s.optimizer, s.scheduler, scaler, s.generator)
        if checkpoints.relog_missing(client, run_id, done.rows):
            log.info("run %s: logged the metrics of epochs its checkpoint holds but the store lacked", run_id)
        return _fit(cfg, client, run_id, s, ckpts, done, scaler, started)


def _fit(cfg, client, run_id, s: jobs.Setup, ckpts, done: checkpoints.Progress, scaler,
         started: float) -> RunResult:
    threads = s.job.threads if len(s.schedule) == 1 else None  # a later phase may run the backbone
    with parallel.intra_op_threads(threads):
        with timeline.part("epochs"):
            end, s = loop.run_epochs(cfg, client, run_id, s, scaler, ckpts, done, started)
        name = lifecycle.run_name(cfg)
        log.info("%s: best val acc %.4f at epoch %d", name, end.best, end.best_epoch)
        if end.epoch < cfg.trainer.epochs:  # stopped at a rung: no diagnostics yet, last.pt stays
            rungs.mark_stopped(client, run_id, end.epoch, cfg.trainer.epochs)
            _log_total(client, run_id, started, end.epoch, done.elapsed)
            return RunResult(run_id, end.best, end.best_epoch, end.seconds)
        diagnostics.log_best(client, run_id, s.model, ckpts.dir / checkpoints.BEST, s.job)
        test = _test(cfg, client, run_id, s)
        # Only now is the resume point no longer needed: a run stopped during its diagnostics
        # resumes after its last epoch instead of training again from the first.
        with timeline.part("exit"):
            ckpts.finish()
    # Every process of the run: the earlier ones' share came with the checkpoint.
    _log_total(client, run_id, started, cfg.trainer.epochs, done.elapsed)
    return RunResult(run_id, end.best, end.best_epoch, end.seconds, None if test is None else test["test_acc"])


def _grid(cfg, client, run_id, s: jobs.Setup, started: float, work: Path) -> RunResult:
    """A grid of heads (`tl.training.head_grid`): the run reports, keeps and diagnoses its best head."""
    with parallel.intra_op_threads(s.job.threads):
        with timeline.part("epochs"):
            best, best_epoch, seconds = head_grid.fit(cfg, client, run_id, s)
        if cfg.tracking.get("log_checkpoint", True):
            checkpoints.RunCheckpoints(client, run_id, staging=work, head_only=_head_only(s)).save_best(
                s.model, best_epoch, best, s.job.classes)
        diagnostics.log_best(client, run_id, s.model, None, s.job)
        test = _test(cfg, client, run_id, s)
    _log_total(client, run_id, started, cfg.trainer.epochs)
    return RunResult(run_id, best, best_epoch, seconds, None if test is None else test["test_acc"])


def _test(cfg, client, run_id: str, s: jobs.Setup) -> dict | None:
    """Test metrics of the val-selected model, once, after every choice; None without a test
    split or with `trainer.evaluate_test=false` (a race's trials and screen never see test)."""
    if s.job.test_loader is None or not cfg.trainer.get("evaluate_test", True):
        return None
    test = diagnostics.log_test(client, run_id, s.job, cfg.trainer.epochs)
    log.info("%s: test acc %.4f  loss %.4f (%d images)", lifecycle.run_name(cfg), test["test_acc"],
             test["test_loss"], s.job.n_test)
    return test


def _log_total(client, run_id: str, started: float, step: int, earlier: float = 0.0) -> None:
    """The run's whole cost (`earlier`: its previous processes' share, from the checkpoint),
    and where this process's went (`tl.runtime.timeline`)."""
    store.log_metrics(client, run_id, {"total_seconds": earlier + time.perf_counter() - started,
                                       **timeline.current_metrics()}, step=step)


def _head_only(s: jobs.Setup) -> dict | None:
    """Checkpoints hold only the head when nothing else ever trains: a run of one phase on
    cached features. A phased run trains the backbone later, so its checkpoints hold it all."""
    return s.job.head_only if len(s.schedule) == 1 else None


@contextmanager
def _staging():
    """A private folder for the files a run uploads (and, with a remote store, its checkpoints)."""
    work = Path(tempfile.mkdtemp(prefix="tl-run-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
