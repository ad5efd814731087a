"""Everything tl does with Ray, in one place: a sweep on Hydra's Ray launcher (a local instance
or an existing cluster), waiting for every task and stopping them all on a signal.

`ray` is imported inside the functions: it is an optional extra, and slow to import. A job on a
Ray worker learns the CPUs it was granted from its own launcher config
(`tl.runtime.parallel.granted_cpus`), which needs no Ray import.
"""

from __future__ import annotations

import logging

from hydra.core.singleton import Singleton
from omegaconf import open_dict

from tl.runtime import parallel
from tl.sweeps.launch import begin, failed_job, wait_for_jobs
from tl.sweeps.state import SWEEP
from tl.sweeps.stopping import Stop

log = logging.getLogger(__name__)

# A small object store for a local instance: jobs pass configs, not data.
LOCAL_OBJECT_STORE_BYTES = 78643200


def prepare(launcher_cfg) -> None:
    """Settings tl needs from Ray's launcher, set on the sweep's config before Hydra builds it."""
    remote = launcher_cfg.ray.remote
    # Ray reruns a task whose worker died; a rerun would start a second run of the same job.
    # The dead one ends KILLED instead, and `+resume` continues it.
    if remote.get("max_retries") is None:
        remote.max_retries = 0


def launch(launcher, job_overrides, initial_job_idx):
    """hydra-ray-launcher's local launch, waiting for every task: a task whose worker died
    is a failed job, and a stop signal cancels every task."""
    import ray
    # The plugin's private `_launcher_util` (its `launch` neither waits out dead workers nor
    # cancels on a signal, hydra#1884); tests/sweeps/test_upstream.py fails if it changes.
    from hydra_plugins.hydra_ray_launcher._launcher_util import launch_job_on_ray, start_ray

    begin(launcher, job_overrides, initial_job_idx)
    init = launcher.ray_cfg.init
    started_here = not ray.is_initialized() and not init.get("address")
    if not init.get("address"):
        init.setdefault("object_store_memory", LOCAL_OBJECT_STORE_BYTES)  # hydra#2893: not on a cluster
    if not init.get("address") and (init.get("num_cpus") or 0) > parallel.cores():
        log.warning("hydra.launcher.ray.init.num_cpus=%s is more than the %d CPU cores: jobs will "
                    "slow each other", init.get("num_cpus"), parallel.cores())
    start_ray(init)
    SWEEP.launched(len(job_overrides))
    refs, done = {}, {}

    def pending():
        return [r for r in refs if r not in done]

    def collect() -> bool:
        ready, _ = ray.wait(pending(), num_returns=1, timeout=1.0) if pending() else ([], [])
        for r in ready:
            idx, overrides = refs[r]
            try:
                done[r] = ray.get(r)
            except Exception as e:  # the worker died, or the task was cancelled
                done[r] = failed_job(overrides, idx, e)
        return not pending()

    stop = Stop(cancel=lambda: [ray.cancel(r, force=False) for r in pending()],
                force=lambda: [ray.cancel(r, force=True) for r in pending()])
    try:
        with stop:
            for idx, overrides in enumerate(job_overrides, initial_job_idx):
                cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
                with open_dict(cfg):
                    cfg.hydra.job.id = f"job_id_for_{idx}"
                    cfg.hydra.job.num = idx
                ref = launch_job_on_ray(launcher.hydra_context, launcher.ray_cfg.remote, cfg,
                                        launcher.task_function, Singleton.get_state())
                refs[ref] = (idx, list(overrides))
                if stop.signum is not None:
                    break
            wait_for_jobs(stop, collect)
        return [done.get(r) or failed_job(o, idx, RuntimeError("killed after the stop's grace period"))
                for r, (idx, o) in refs.items()]
    finally:
        if started_here:  # no process of a local instance outlives the sweep
            ray.shutdown()
