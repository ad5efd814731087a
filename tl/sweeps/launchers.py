"""Hydra's launcher plugins (joblib, Ray, submitit), as tl runs them.

The sweep callback hands the chosen plugin's launcher over to a subclass here before Hydra
instantiates it (`adopt`), so that with every launcher:
- the sweep waits for every job, and a job whose worker died (a killed Ray worker, a cancelled
  SLURM job, a crashed loky worker) is one failed job, not the end of the others;
- a stop signal to the launching process stops every job it started (`tl.sweeps.stopping`);
- an embedded store is refused when jobs may run where they cannot write it.

In a job, `tl.runtime.parallel.granted_cpus()` says how many CPUs the launcher granted it
(Ray's `num_cpus`, submitit's `cpus_per_task`); `limit_threads` turns that into torch threads.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Sequence

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from tl.errors import ConfigError
from tl.sweeps import stopping

log = logging.getLogger(__name__)

# The plugins' launcher classes and the kind each is; `adopt` swaps each for tl's subclass.
PLUGINS = {
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher": "joblib",
    "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher": "ray",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher": "submitit_local",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher": "submitit_slurm",
}
# Hydra instantiates launchers only from its `hydra_plugins` namespace: tl's live there.
_PLUGIN_MODULE = "hydra_plugins.tl_launchers.tl_launchers"
OURS = {
    "joblib": f"{_PLUGIN_MODULE}.JoblibLauncher",
    "ray": f"{_PLUGIN_MODULE}.RayLauncher",
    "submitit_local": f"{_PLUGIN_MODULE}.SubmititLocalLauncher",
    "submitit_slurm": f"{_PLUGIN_MODULE}.SubmititSlurmLauncher",
}
# Jobs of these run in processes this one did not fork, possibly on other machines.
OUTSIDE = ("ray", "submitit_local", "submitit_slurm")

# How long a stopped sweep waits for its jobs to close their runs before killing them.
STOP_GRACE_SECONDS = 60


def kind(launcher_cfg) -> str:
    """`basic`, `joblib`, `ray`, `submitit_local`, `submitit_slurm`, or the target's own name."""
    target = str(launcher_cfg.get("_target_", ""))
    if target in PLUGINS:
        return PLUGINS[target]
    for name, ours in OURS.items():
        if target == ours:
            return name
    if target.endswith("BasicLauncher"):
        return "basic"
    return target


def is_embedded(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "databricks"))


def check_store(config: DictConfig, uri: str) -> None:
    """Refuse, before anything is launched, jobs that would write an embedded store from
    processes (or machines) that may not reach its file."""
    k = kind(config.hydra.launcher)
    if k not in OUTSIDE or not is_embedded(uri):
        return
    if config.tracking.get("shared_filesystem") is True:
        return
    raise ConfigError(
        f"hydra/launcher={k} runs each job in a process of its own, possibly on another machine, "
        f"which cannot be trusted to write the embedded store {uri}. Log to a tracking server "
        "instead: tracking.uri=http://HOST:PORT (README: Teams and clusters). If every job runs "
        "on this host, or the store's folder is on a filesystem that every node mounts at the same "
        "path, say so with tracking.shared_filesystem=true.")


def adopt(config: DictConfig) -> str:
    """Put tl's subclass in place of the chosen plugin launcher (Hydra instantiates the
    launcher after `on_multirun_start`). Returns the launcher's kind."""
    k = kind(config.hydra.launcher)
    target = str(config.hydra.launcher.get("_target_", ""))
    if target not in PLUGINS:
        return k
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.launcher._target_ = OURS[k]
        if k == "ray":
            remote = config.hydra.launcher.ray.remote
            # Ray reruns a task whose worker died; a rerun would start a second run of the same
            # job. The dead one ends KILLED instead, and `+resume` continues it.
            if remote.get("max_retries") is None:
                remote.max_retries = 0
    return k


def _failed(overrides: Sequence[str], idx: int, error: BaseException):
    """The JobReturn of a job whose worker died before it could return one."""
    from hydra.core.utils import JobReturn, JobStatus

    ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
    ret.return_value = error
    ret.status = JobStatus.FAILED
    log.error("job #%d (%s) ended without a result: %s", idx, " ".join(overrides), error)
    return ret


# ---------------------------------------------------------------------------------------------
# joblib (loky workers on this machine)

def _loky_workers() -> list[int]:
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor
    return list(getattr(executor, "_processes", {}) or {}) if executor is not None else []


def _shutdown_loky() -> None:
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor
    if executor is not None:
        # loky keeps idle workers for 300 s and would run queued jobs on its own (loky#360).
        executor.shutdown(wait=True, kill_workers=True)


def _signal_pids(pids, signum) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


class JoblibStop:
    """Mixed into the joblib launcher: a stop signal stops its loky workers too."""

    def launch(self, job_overrides, initial_job_idx):
        import signal

        from tl.sweeps import sweep

        sweep.check_can_launch()
        sweep.launched(len(job_overrides))
        stop = stopping.Stop(
            cancel=lambda: _signal_pids(_loky_workers(), signal.SIGTERM),
            force=lambda: _signal_pids(_loky_workers(), signal.SIGKILL))
        try:
            with stop:
                # A job stopped by the signal returns as failed (JobKilled); a queued job sees
                # its parent stopping and starts no run: the Parallel call returns on its own.
                return super().launch(job_overrides, initial_job_idx)
        finally:
            if stop.signum is not None:
                _shutdown_loky()


# ---------------------------------------------------------------------------------------------
# Ray (a local instance or an existing cluster)

def ray_launch(launcher, job_overrides, initial_job_idx):
    """hydra-ray-launcher's local launch, waiting for every task: a task whose worker died
    is a failed job, and a stop signal cancels every task."""
    from pathlib import Path

    import ray
    from hydra.core.singleton import Singleton
    from hydra.core.utils import configure_log, filter_overrides, setup_globals
    from hydra_plugins.hydra_ray_launcher._launcher_util import (
        launch_job_on_ray,
        start_ray,
    )

    from tl.sweeps import sweep

    sweep.check_can_launch()
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    init = launcher.ray_cfg.init
    started_here = not ray.is_initialized() and not init.get("address")
    if not init.get("address"):
        # A small object store for a local instance (jobs pass configs, not data; hydra#2893:
        # an existing cluster refuses this key).
        init.setdefault("object_store_memory", 78643200)
    start_ray(init)
    sweep.launched(len(job_overrides))

    refs = {}
    stop = stopping.Stop(
        cancel=lambda: [ray.cancel(r, force=False) for r in refs if r not in done],
        force=lambda: [ray.cancel(r, force=True) for r in refs if r not in done])
    done: dict = {}
    try:
        with stop:
            for i, overrides in enumerate(job_overrides):
                idx = initial_job_idx + i
                log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
                cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
                with open_dict(cfg):
                    cfg.hydra.job.id = f"job_id_for_{idx}"
                    cfg.hydra.job.num = idx
                ref = launch_job_on_ray(launcher.hydra_context, launcher.ray_cfg.remote, cfg,
                                        launcher.task_function, Singleton.get_state())
                refs[ref] = (idx, list(overrides))
                if stop.signum is not None:
                    break
            deadline = None
            while len(done) < len(refs):
                pending = [r for r in refs if r not in done]
                ready, _ = ray.wait(pending, num_returns=1, timeout=1.0)
                for r in ready:
                    idx, overrides = refs[r]
                    try:
                        done[r] = ray.get(r)
                    except Exception as e:  # the worker died, or the task was cancelled
                        done[r] = _failed(overrides, idx, e)
                if stop.signum is not None:
                    deadline = deadline or time.monotonic() + STOP_GRACE_SECONDS
                    if time.monotonic() > deadline:
                        stop.force()
                        break
        return [done[r] for r in refs]
    finally:
        if started_here:  # no process of a local instance outlives the sweep
            ray.shutdown()


# ---------------------------------------------------------------------------------------------
# submitit (SLURM, or local processes)

def submitit_launch(launcher, job_overrides, initial_job_idx):
    """hydra-submitit-launcher's launch, waiting for every job: a cancelled or timed-out job
    (`UncompletedJobError`, submitit#1775) is a failed job, and a stop signal cancels every
    job this sweep submitted."""
    from pathlib import Path

    import submitit
    from hydra.core.singleton import Singleton
    from hydra.core.utils import filter_overrides
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    from tl.sweeps import sweep

    sweep.check_can_launch()
    params = dict(launcher.params)
    init_keys = {"max_num_timeout", "submitit_folder"}
    init = {"folder": params["submitit_folder"]}
    init.update({f"{launcher._EXECUTOR}_{k}": v for k, v in params.items() if k == "max_num_timeout"})
    executor = submitit.AutoExecutor(cluster=launcher._EXECUTOR, **init)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"{launcher._EXECUTOR}_{k}": v
                                  for k, v in params.items() if k not in init_keys})
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    args = []
    for i, overrides in enumerate(job_overrides):
        idx = initial_job_idx + i
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        args.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
    sweep.launched(len(job_overrides))
    jobs = executor.map_array(launcher, *zip(*args))

    def cancel():
        for j in jobs:
            if not j.done():
                _stop_submitit_job(j, graceful=True)

    def force():
        for j in jobs:
            if not j.done():
                _stop_submitit_job(j, graceful=False)

    stop = stopping.Stop(cancel=cancel, force=force)
    results: dict[int, object] = {}
    with stop:
        deadline = None
        while len(results) < len(jobs):
            for n, j in enumerate(jobs):
                if n not in results and j.done():
                    try:
                        results[n] = j.results()[0]
                    except Exception as e:  # cancelled, timed out, or its process died
                        results[n] = _failed(args[n][0], args[n][2], e)
            if stop.signum is not None:
                deadline = deadline or time.monotonic() + STOP_GRACE_SECONDS
                if time.monotonic() > deadline:
                    force()
                    break
            time.sleep(0.5)
    return [results[n] for n in range(len(jobs))]


def _stop_submitit_job(job, graceful: bool) -> None:
    import signal

    if getattr(job, "_process", None) is not None:  # submitit_local: the job's controller process
        # SIGTERM is forwarded to the task, where tl ends the run KILLED; submitit's own
        # cancel() sends SIGINT and kills the task a second later.
        tree = [] if graceful else _descendants(job._process.pid)
        try:
            job._process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        except ProcessLookupError:
            pass
        _signal_pids(tree, signal.SIGKILL)
    else:  # SLURM: scancel sends SIGTERM, then SIGKILL after the cluster's KillWait
        job.cancel(check=False)


def _descendants(pid: int) -> list[int]:
    """Child processes of `pid`, recursively (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out
