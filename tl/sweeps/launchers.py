"""Hydra's launcher plugins (joblib, Ray, submitit), as tl runs them.

The sweep callback hands the chosen plugin's launcher over to a subclass (in
hydra_plugins/tl_launchers) before Hydra instantiates it (`adopt`), so that with every launcher:
- the sweep waits for every job, and a job whose worker died (the OOM killer, a segfault, a
  killed Ray worker, a cancelled SLURM job) is one failed job, not the end of the others;
- a stop signal to the launching process stops every job it started (`tl.sweeps.stopping`);
- an embedded store is refused when jobs may run where they cannot write it.
The joblib and submitit launches are here; Ray's, with everything else about Ray, is in
`tl.sweeps.ray_jobs`.

In a job, `tl.runtime.parallel.granted_cpus()` says how many CPUs the launcher granted it
(Ray's `num_cpus`, submitit's `cpus_per_task`); `limit_threads` turns that into torch threads.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
from collections import deque
from concurrent.futures import Future

from hydra.core.singleton import Singleton
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from tl.errors import ConfigError
from tl.runtime import parallel, signals
from tl.sweeps import ray_jobs
from tl.sweeps.launch import begin, failed_job, wait_for_jobs
from tl.sweeps.state import SWEEP
from tl.sweeps.stopping import Stop, signal_tree
from tl.tracking import remote

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


class WorkerDied(RuntimeError):
    """A job's worker process ended without returning its job (killed, crashed)."""


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


def check_store(config: DictConfig, uri: str) -> None:
    """Refuse, before anything is launched, jobs that would write an embedded store from
    processes (or machines) that may not reach its file."""
    k = kind(config.hydra.launcher)
    if k not in OUTSIDE or not remote.is_embedded(uri):
        return
    if config.tracking.get("shared_filesystem") is True:
        return
    raise ConfigError(
        f"hydra/launcher={k} runs each job in a process of its own, possibly on another machine, "
        f"which cannot be trusted to write the embedded store {uri}. Log to a tracking server "
        "instead: tracking.uri=http://HOST:PORT (docs/clusters-and-server.md). If every job runs "
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
            ray_jobs.prepare(config.hydra.launcher)
    return k


# ---------------------------------------------------------------------------------------------
# joblib: loky workers on this machine

def death_cause(error: BaseException) -> str:
    """Why a loky worker died, from the error loky gives its job."""
    # loky gives no exit code but names it in its message (as in joblib#812: "... The exit codes
    # of the workers are {SIGKILL(-9)}"); tests/sweeps/test_upstream.py fails if that changes.
    found = re.search(r"exit codes of the workers are \{(\w+)", str(error))
    code = found.group(1) if found else None
    if code == "SIGKILL":
        return "worker killed by SIGKILL — out of memory? (the kernel's OOM killer sends SIGKILL)"
    if code and code.startswith("SIG"):
        return f"worker killed by {code}" + (" (a crash in native code)" if code == "SIGSEGV" else "")
    if code:
        return f"worker exited with status {code} while running the job"
    return f"worker died while running the job ({type(error).__name__}: {' '.join(str(error).split())})"


class _Slot:
    """One loky worker of a joblib sweep, reused job after job as joblib's pool does, but in a
    pool of its own: when loky's one pool lost a worker (the OOM killer, a segfault), it
    killed every other worker and failed every queued job (loky's `terminate_broken`); a slot's
    death fails its own job only, and a fresh slot takes the queued ones."""

    def __init__(self, env: dict[str, str]):
        # joblib only for joblib sweeps: importing loky costs every other process 0.15 s
        from joblib.externals.loky import ProcessPoolExecutor

        self.executor = ProcessPoolExecutor(max_workers=1, env=env)
        self.pid = self.executor.submit(os.getpid).result()
        self.future, self.job, self.dead = None, None, False

    def run(self, fn, idx: int, overrides, *args) -> None:
        from joblib.externals.loky.process_executor import BrokenProcessPool

        self.job = (idx, list(overrides))
        try:
            self.future = self.executor.submit(fn, idx, overrides, *args)
        except BrokenProcessPool as e:  # the worker died while idle: `result` says so
            self.future = Future()
            self.future.set_exception(e)

    def result(self):
        """This slot's finished job's JobReturn; frees the slot."""
        from joblib.externals.loky.process_executor import BrokenProcessPool

        (idx, overrides), future = self.job, self.future
        self.job = self.future = None
        try:
            return future.result()
        except BrokenProcessPool as e:
            self.dead = True
            cause = death_cause(e)
            SWEEP.worker_died(socket.gethostname(), self.pid, cause)
            return failed_job(overrides, idx, WorkerDied(f"job #{idx} (worker pid {self.pid}): {cause}"))
        except Exception as e:  # the job could not be sent or its result not read back
            return failed_job(overrides, idx, e)

    def close(self) -> None:
        # loky keeps idle workers alive, and would run queued work on its own (loky#360).
        self.executor.shutdown(wait=True, kill_workers=True)


def _worker_env(n_workers: int) -> dict[str, str]:
    # As joblib's Parallel does: the native thread pools share the cores between the workers,
    # unless the user set them.
    share = str(max(1, parallel.cores() // n_workers))
    return {v: os.environ.get(v, share) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def joblib_launch(launcher, job_overrides, initial_job_idx):
    """hydra-joblib-launcher's launch, with a worker's death confined to its own job: that job
    fails with the cause, the others finish, queued jobs still run. A stop signal stops them all."""
    # An optional extra, so imported here. The plugin's one-job function lives in its private
    # `_core` (its public `launch` runs every job in one joblib pool);
    # tests/sweeps/test_upstream.py fails if it is renamed.
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    begin(launcher, job_overrides, initial_job_idx)
    n_workers = min(parallel.workers(launcher.joblib.get("n_jobs")), len(job_overrides))
    env, state = _worker_env(n_workers), Singleton.get_state()
    queue = deque(enumerate(job_overrides, initial_job_idx))
    slots: list[_Slot] = []
    results: dict[int, object] = {}
    SWEEP.launched(len(job_overrides))

    def collect() -> bool:
        for slot in slots:
            if slot.future is not None and slot.future.done():
                idx = slot.job[0]  # before `result()`, which frees the slot
                results[idx] = slot.result()
        for slot in [s for s in slots if s.dead]:
            slots.remove(slot)
            slot.close()
        while queue and stop.signum is None:
            free = [s for s in slots if s.future is None]
            if not free and len(slots) >= n_workers:
                break
            slot = free[0] if free else _Slot(env)
            if not free:
                slots.append(slot)
            idx, overrides = queue.popleft()
            slot.run(execute_job, idx, overrides, launcher.hydra_context, launcher.config,
                     launcher.task_function, state)
        return all(s.future is None for s in slots) and (not queue or stop.signum is not None)

    def busy(signum):
        for s in slots:
            if s.future is not None:
                signal_tree(s.pid, signum, children_too=signum == signal.SIGKILL)

    stop = Stop(cancel=lambda: busy(signal.SIGTERM), force=lambda: busy(signal.SIGKILL))
    try:
        with stop:
            # A job stopped by the signal returns as failed (JobKilled); a queued one never starts.
            wait_for_jobs(stop, collect, pause=0.2)
    finally:
        for slot in slots:
            slot.close()
    return [results.get(idx) or failed_job(o, idx, signals.JobKilled("the sweep was stopped before it returned"))
            for idx, o in enumerate(job_overrides, initial_job_idx)]


# ---------------------------------------------------------------------------------------------
# submitit: SLURM, or local processes

def submitit_launch(launcher, cluster: str, job_overrides, initial_job_idx):
    """hydra-submitit-launcher's launch on `cluster` (`local` or `slurm`), waiting for every
    job: a cancelled or timed-out job (`UncompletedJobError`, submitit#1775) is a failed job,
    and a stop signal cancels every job this sweep submitted."""
    import submitit  # an optional extra, so imported here
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    begin(launcher, job_overrides, initial_job_idx)
    params = dict(launcher.params)
    init_keys = {"max_num_timeout", "submitit_folder"}
    init = {"folder": params["submitit_folder"]}
    init.update({f"{cluster}_{k}": v for k, v in params.items() if k == "max_num_timeout"})
    executor = submitit.AutoExecutor(cluster=cluster, **init)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"{cluster}_{k}": v
                                  for k, v in params.items() if k not in init_keys})
    args = [(list(o), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
            for idx, o in enumerate(job_overrides, initial_job_idx)]
    SWEEP.launched(len(job_overrides))
    jobs = executor.map_array(launcher, *zip(*args))
    results: dict[int, object] = {}

    def collect() -> bool:
        for n, j in enumerate(jobs):
            if n not in results and j.done():
                try:
                    results[n] = j.results()[0]
                except Exception as e:  # cancelled, timed out, or its process died
                    results[n] = failed_job(args[n][0], args[n][2], e)
        return len(results) == len(jobs)

    def stop_all(graceful: bool):
        for j in jobs:
            if not j.done():
                _stop_submitit_job(j, cluster, graceful)

    stop = Stop(cancel=lambda: stop_all(True), force=lambda: stop_all(False))
    with stop:
        wait_for_jobs(stop, collect, pause=0.5)
    return [results.get(n) or failed_job(a[0], a[2], signals.JobKilled("killed after the stop's grace period"))
            for n, a in enumerate(args)]


def _stop_submitit_job(job, cluster: str, graceful: bool) -> None:
    if cluster == "local":
        # A local job's id is its controller process's pid. SIGTERM is forwarded to the task,
        # where tl ends the run KILLED; submitit's own cancel() sends SIGINT and kills the task
        # a second later.
        signal_tree(int(job.job_id), signal.SIGTERM if graceful else signal.SIGKILL, children_too=not graceful)
    else:  # SLURM: scancel sends SIGTERM, then SIGKILL after the cluster's KillWait
        job.cancel(check=False)
