"""The race's jobs as Hydra jobs: each a normal tl run launched in batches through the
configured launcher (basic, joblib, Ray, submitit), a child of the sweep's parent run, read back
from MLflow (a job's return value is only its best val acc).

A race trial runs with `trainer.stop_after=R trainer.evaluate_test=false`; a promoted one is
continued with `+resume=RUN_ID trainer.stop_after=R'` (the same run); the confirmed runs are
children of a second parent ("answer confirm", `tl.role=sweep`), so `tl compare` on it sees them
alone. With `resume=PARENT_RUN_ID` (`tl answer --resume`), runs of that earlier sweep are found
by their overrides: a finished one is reused, a stopped, killed or failed one continued; either
moves under this sweep's parent (the earlier parent is tagged `tl.answer.resumed_by`)."""

from __future__ import annotations

import dataclasses
import logging

from omegaconf import DictConfig

from tl.answer import space
from tl.answer.race import Job, Outcome
from tl.errors import ConfigError
from tl.sweeps import sweep
from tl.tracking import store
from tl.tracking.runs import TUNED_TAG
from tl.training import head_grid, resume, rungs

log = logging.getLogger(__name__)

# Keys the sweeper sets per trial: given on the command line they would be silently overridden.
OWN_KEYS = {"model": "hydra.sweeper.models", "strategy": "hydra.sweeper.strategies",
            "optimizer.lr": "hydra.sweeper.lr.<strategy>", "trainer.epochs": "hydra.sweeper.epochs",
            "trainer.seed": "hydra.sweeper.seeds", "trainer.stop_after": "the race's rungs",
            "trainer.evaluate_test": "the stages (only confirmed runs see test)",
            "tracking.run_name": "the trial's name", "resume": "hydra.sweeper.resume"}


def check_overrides(arguments: list[str]) -> list[str]:
    """The command line's overrides, which every trial shares; refuses those the sweeper sets."""
    for a in arguments:
        key = a.split("=", 1)[0].lstrip("+~")
        if key in OWN_KEYS:
            raise ConfigError(f"{a}: hydra/sweeper=answer sets {key} for each trial; use {OWN_KEYS[key]} instead")
        if "," in a.split("=", 1)[-1] and not a.split("=", 1)[-1].strip().startswith("["):
            raise ConfigError(f"{a}: hydra/sweeper=answer builds its own search space; a swept value "
                              "cannot be one of every trial's overrides")
    return list(arguments)


def parent_run_id(config: DictConfig) -> str:
    """The sweep's parent run, which tl's sweep callback created and named in the job overrides."""
    for o in config.hydra.overrides.hydra:
        if o.lstrip("+").startswith(f"hydra.job.env_set.{sweep.PARENT_ENV}="):
            return o.split("=", 1)[1]
    raise ConfigError("hydra/sweeper=answer needs tl's sweep callback (hydra.callbacks.mlflow_sweep in "
                      "conf/train.yaml): it creates the parent run every trial logs under")


def run_name(job: Job) -> str:
    """A screen or race trial's name: its stage and recipe, without spaces or quotes (`tl compare`
    reads a run's overrides split on spaces)."""
    r = job.recipe
    if job.grid:
        return f"answer-{job.stage}-{r.model}-{r.strategy}-grid{len(job.grid)}-seed{job.seed}"
    wd = f"-wd{r.weight_decay:g}" if r.weight_decay else ""
    return f"answer-{job.stage}-{r.model}-{r.strategy}-lr{r.lr:g}{wd}"


def _grid_overrides(job: Job) -> list[str]:
    lrs, wds = space.axes(job.grid)
    return [f"+head_grid.lrs=[{','.join(f'{v:g}' for v in lrs)}]",
            f"+head_grid.wds=[{','.join(f'{v:g}' for v in wds)}]"]


def _unordered(overrides: list[str]) -> str:
    """Overrides as a key that does not depend on their order (`tl answer` and `tl-train -m`
    write the same sweep's in different orders)."""
    return " ".join(sorted(overrides))


def _heads(job: Job, metrics: dict) -> dict:
    """Each head setting of a screen job's run: (best val acc, val loss at that epoch), from the
    per-head metrics `tl.training.head_grid` logs in its grid's order."""
    lrs, wds = space.axes(job.grid)
    recipes = {(r.lr, r.weight_decay): r for r in job.grid}
    out = {}
    for i, pair in enumerate(head_grid.settings(lrs, wds)):
        if pair in recipes and f"grid.{i}.best_val_acc" in metrics:
            out[recipes[pair]] = (metrics[f"grid.{i}.best_val_acc"], metrics.get(f"grid.{i}.best_val_loss"))
    return out


class HydraRunner:
    def __init__(self, launcher, config_loader, config: DictConfig, fixed: list[str], priors: dict,
                 parallel: int, reuse_parent: str | None = None):
        self.launcher, self.loader, self.config, self.fixed = launcher, config_loader, config, fixed
        self.priors, self.parallel = priors, parallel
        self.parent = parent_run_id(config)
        self.uri = store.resolve_uri(config.tracking)
        self.client = store.client_for(self.uri)
        self.experiment_id = self.client.get_run(self.parent).info.experiment_id
        self.confirm_parent: str | None = None
        self.idx = 0
        self.not_counted = 0  # jobs handed to the launcher that start no child of the parent
        self.reusable = self._earlier(reuse_parent) if reuse_parent else {}

    # --- the screen's frozen pass, in this process ------------------------------------------

    def compose(self, overrides: list[str]) -> DictConfig:
        return self.loader.load_sweep_config(self.config, [*self.fixed, *overrides])

    def scores(self, model: str) -> dict:
        from tl.training import frozen

        s = frozen.score(self.compose([f"model={model}", "strategy=freeze"]))
        return {"logme": s.logme, "knn_acc": s.knn_acc, "seconds": s.seconds, "feature_cache": s.feature_cache}

    def prior(self, model: str) -> float | None:
        """ImageNet top-1 (%) of the preset's weights: torchvision's metadata, else the recipes'
        table of published figures; None without pretraining or where unknown."""
        try:
            m = self.compose([f"model={model}"]).model
        except Exception:
            return None
        if not m.get("pretrained") or m.get("weights"):
            return None
        if m.source == "torchvision":
            try:
                import torchvision

                meta = torchvision.models.get_model_weights(m.name).DEFAULT.meta
                return float(meta["_metrics"]["ImageNet-1K"]["acc@1"])
            except Exception:
                return None
        value = self.priors.get(str(m.name))
        return None if value is None else float(value)

    # --- launching and reading back ---------------------------------------------------------

    def _task(self, job: Job) -> list[str]:
        """A new job's overrides as its run records them (its `tl.overrides` tag, by which it is
        found again). Confirmed runs carry no name of their own: a recipe's seeds must differ in
        `trainer.seed` alone for `tl compare` to group them."""
        out = [*self.fixed, *job.recipe.overrides(), *(_grid_overrides(job) if job.grid else []),
               f"trainer.epochs={job.epochs}"]
        if job.stage != "confirm":
            out.append(f"tracking.run_name={run_name(job)}")
        if job.stop_after < job.epochs:
            out.append(f"trainer.stop_after={job.stop_after}")
        if not job.test:
            out.append("trainer.evaluate_test=false")
        if job.seed is not None:
            out.append(f"trainer.seed={job.seed}")
        return out

    def _overrides(self, job: Job) -> list[str]:
        if job.run_id is not None:
            kept = [o for o in self.fixed if o.split("=", 1)[0].lstrip("+~") in resume.ALLOWED]
            stop = [f"trainer.stop_after={job.stop_after}"] if job.stop_after < job.epochs else []
            return [f"+resume={job.run_id}", *stop, *kept]
        if job.stage == "confirm":  # the confirm parent's child, not the sweep parent's
            return [*self._task(job), f"++hydra.job.env_set.{sweep.PARENT_ENV}={self._confirm_parent()}"]
        return self._task(job)

    def run(self, jobs: list[Job]) -> list[Outcome]:
        ready: dict[int, Outcome] = {}
        todo: list[tuple[int, Job]] = []
        for i, job in enumerate(jobs):
            job, found = self._reuse(job)
            if found is not None:
                ready[i] = found
            else:
                todo.append((i, job))
        if todo:
            batch = [self._overrides(j) for _, j in todo]
            returns = self.launcher.launch(batch, initial_job_idx=self.idx)
            self.idx += len(batch)
            uncounted = sum(j.run_id is not None or j.stage == "confirm" for _, j in todo)
            # tl's sweep counts every launched job as a run of the parent: a continued trial
            # starts none, and a confirmed run is a child of the confirm parent.
            sweep.launched(-uncounted)
            for (i, job), ret in zip(todo, returns):
                ready[i] = self._outcome(job, ret)
        for i, job in enumerate(jobs):
            if job.tuned and ready[i].run_id:
                self.client.set_tag(ready[i].run_id, TUNED_TAG, job.tuned)
        return [ready[i] for i in range(len(jobs))]

    def _outcome(self, job: Job, ret) -> Outcome:
        error = ""
        try:
            ret.return_value  # re-raises the job's exception
        except BaseException as e:  # a failed trial is its outcome, never the end of the race
            error = f"{type(e).__name__}: {e}".splitlines()[0][:300] if str(e) else type(e).__name__
        run = self.client.get_run(job.run_id) if job.run_id else self._find(job)
        if run is None:
            return Outcome(job, None, False, error=error or "the job logged no run")
        out = self.read(job, run)
        if error:
            out.ok, out.error = False, run.data.tags.get("tl.error", error)[:300]
        return out

    def _find(self, job: Job):
        parent = self.confirm_parent if job.stage == "confirm" else self.parent
        task = " ".join(self._task(job))
        if parent is None or "'" in task:
            return None
        where = f"tags.`mlflow.parentRunId` = '{parent}' and tags.`tl.overrides` = '{task}'"
        found = self.client.search_runs([self.experiment_id], filter_string=where,
                                        order_by=["attributes.start_time DESC"], max_results=1)
        return found[0] if found else None

    def read(self, job: Job, run) -> Outcome:
        rid = run.info.run_id
        curve = sorted((m.step, m.value) for m in self.client.get_metric_history(rid, "val_acc"))
        upto = [v for step, v in curve if step <= job.stop_after]
        seconds = sorted((m.step, m.value) for m in self.client.get_metric_history(rid, "train_seconds"))
        n_val = run.data.params.get("data.val_images", "0")
        ok = run.info.status == "FINISHED"
        return Outcome(job, rid, ok, max(upto) if upto else None, max((s for s, _ in curve), default=0),
                       seconds[-1][1] if seconds else 0.0, int(n_val) if n_val.isdigit() else 0,
                       run.data.metrics.get("test_acc") if job.test else None,
                       "" if ok else run.data.tags.get("tl.error", run.info.status), curve,
                       heads=_heads(job, run.data.metrics) if job.grid else {})

    def note(self, outcome: Outcome, reason: str) -> None:
        if outcome is not None and outcome.run_id:
            self.client.set_tag(outcome.run_id, rungs.STOP_REASON, reason)

    # --- the confirm parent ------------------------------------------------------------------

    def _confirm_parent(self) -> str:
        if self.confirm_parent is None:
            run = self.client.create_run(self.experiment_id, run_name="answer confirm", tags={
                "tl.role": "sweep", "tl.answer.stage": "confirm", "mlflow.parentRunId": self.parent,
                "tl.overrides": store.text(" ".join(self.fixed)), "tl.git_commit": store.git_commit()})
            self.confirm_parent = run.info.run_id
            self.client.set_tag(self.parent, "tl.answer.confirm_run", self.confirm_parent)
        return self.confirm_parent

    def finish_confirm(self, ok: bool) -> None:
        if self.confirm_parent is not None:
            self.client.set_terminated(self.confirm_parent, "FINISHED" if ok else "FAILED")

    # --- reusing an earlier sweep's trials (--resume) ---------------------------------------

    def _earlier(self, parent_id: str) -> dict:
        try:
            parent = self.client.get_run(parent_id)
        except Exception:
            raise ConfigError(f"hydra.sweeper.resume={parent_id}: no such run in {self.uri}") from None
        if parent.data.tags.get("tl.role") != "sweep":
            raise ConfigError(f"hydra.sweeper.resume={parent_id} is not a sweep's parent run (tl.role=sweep)")
        runs = {}
        parents = [parent_id]
        confirm = parent.data.tags.get("tl.answer.confirm_run")
        if confirm:
            parents.append(confirm)
        for pid in parents:
            for r in self.client.search_runs([parent.info.experiment_id],
                                             filter_string=f"tags.`mlflow.parentRunId` = '{pid}'",
                                             order_by=["attributes.start_time ASC"], max_results=10000):
                if r.data.tags.get("tl.role") != "sweep":
                    runs[_unordered(r.data.tags.get("tl.overrides", "").split())] = r
        self.client.set_tag(parent_id, "tl.answer.resumed_by", self.parent)
        log.info("resuming answer sweep %s: %d earlier trial runs", parent_id, len(runs))
        return runs

    def _key(self, job: Job) -> str:
        return _unordered(self._task(job))

    def _reuse(self, job: Job) -> tuple[Job, Outcome | None]:
        """(the job to launch, or the outcome that needs none): a finished run that reached the
        job's epoch is read, not trained again; an earlier sweep's run stopped before it, or
        killed or failed after its first epoch, is continued."""
        if job.run_id is not None:
            run = self.client.get_run(job.run_id)
        elif self._key(job) in self.reusable:
            run = self.client.get_run(self.reusable.pop(self._key(job)).info.run_id)
            # The earlier sweep's run joins this one, so every stage shows under one parent.
            parent = self._confirm_parent() if job.stage == "confirm" else self.parent
            self.client.set_tag(run.info.run_id, "mlflow.parentRunId", parent)
        else:
            return job, None
        stopped = rungs.stopped_at(run.data.tags)
        done = self.read(job, run)
        if run.info.status == "FINISHED" and (stopped is None or stopped >= job.stop_after):
            done.reused = job.run_id is None or stopped is None  # no epoch of it trained now
            return job, done
        if run.info.status == "RUNNING" or done.epochs == 0:
            return job, None  # never trained an epoch, or another process holds it: start anew
        return dataclasses.replace(job, run_id=run.info.run_id), None
