"""Every job of a sweep composed and checked before the first one starts.

Without this, a job whose config cannot work (a phase schedule longer than `trainer.epochs`, a
preset that does not exist, a bad value) failed only when its turn came, minutes into the sweep,
with Hydra's "Error executing job" and a traceback. Now the sweep callback composes each job's
config as the launcher will (Hydra's `load_sweep_config`) and runs the checks named in
conf/train.yaml (`hydra.callbacks.mlflow_sweep.checks`: tl's config checks live in
`tl.training`, which imports this package, so they are named there rather than imported here).
A bad job stops the sweep before anything is created or launched, with one line per bad job.

Only Hydra's basic sweeper lists its jobs up front; a sweeper that picks jobs as it goes
(Optuna, tl's answer sweeper) is not checked here.
"""

from __future__ import annotations

import copy
import logging
from typing import Callable, Sequence

# Hydra's own splitting, so the checked jobs are the launched ones, in order (an internal
# module; tests/sweeps/test_upstream.py fails if it changes).
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tl.errors import ConfigError, TLError

log = logging.getLogger(__name__)

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# The errors that mean "this job's config cannot work"; anything else is a bug in a check, and
# the sweep goes on rather than be refused for it.
USER_ERRORS = (TLError, HydraException, OmegaConfBaseException)


class SweepConfigError(ConfigError):
    """Jobs of a sweep whose configs cannot work; nothing was launched."""


def job_overrides(config: DictConfig) -> list[list[str]] | None:
    """Each job's overrides, in launch order, as Hydra's basic sweeper will make them; None for
    another sweeper."""
    if str(config.hydra.sweeper.get("_target_", "")) != BASIC_SWEEPER:
        return None
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    parsed = parser.parse_overrides(params + list(config.hydra.overrides.task))
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def compose_once(loader) -> None:
    """Compose each job's config once for the launch: Hydra's basic sweeper composes every
    job to check its batch and the launcher composes it again, about 0.2 s each (a 5-run
    sweep's later runs took 1 s each). The launcher gets the first composition from the same
    master config, Hydra overrides and job overrides, which is the same config (its resolved
    values' cache copied again, as Hydra does); it is then dropped, so a batch's configs are
    held, not a long sweep's. This check's own compositions come before the sweep callback
    adds its parent run to the Hydra overrides: it composes without the memo."""
    if getattr(loader, "_tl_composed", None) is not None:
        return
    memo: dict[tuple, tuple[DictConfig, DictConfig]] = {}
    compose = loader.load_sweep_config

    def load_sweep_config(master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        key = (id(master_config), tuple(OmegaConf.to_container(master_config.hydra.overrides.hydra)),
               tuple(sweep_overrides))
        held = memo.pop(key, None)
        if held is not None and held[0] is master_config:  # held, so its id was not reused
            return held[1]  # the launcher's: nobody else holds it
        cfg = compose(master_config, sweep_overrides)
        memo[key] = (master_config, copy.deepcopy(cfg))
        OmegaConf.copy_cache(from_config=master_config, to_config=memo[key][1])
        return cfg

    loader.load_sweep_config = load_sweep_config
    loader._tl_composed = memo


def problems(config: DictConfig, jobs: list[list[str]], checks: Sequence[Callable]) -> dict[int, str]:
    """Job index -> why that job's config cannot work, for the jobs that cannot."""
    loader = GlobalHydra.instance().config_loader()
    found = {}
    for i, overrides in enumerate(jobs):
        try:
            cfg = loader.load_sweep_config(config, list(overrides))
            for check in checks:
                check(cfg)
        except USER_ERRORS as e:
            # One line per job; Hydra's "Config search path" listing says nothing about the job.
            found[i] = " ".join(str(e).split("Config search path")[0].split())
    return found


def check(config: DictConfig, check_names: Sequence[str]) -> None:
    """Raise `SweepConfigError` listing every job whose config fails a check."""
    jobs = job_overrides(config)
    if not jobs:
        return
    bad = problems(config, jobs, [get_method(name) for name in check_names])
    if bad:
        raise SweepConfigError(describe(jobs, bad))
    compose_once(GlobalHydra.instance().config_loader())
    log.info("checked the configs of the sweep's %d jobs", len(jobs))


def describe(jobs: list[list[str]], bad: dict[int, str]) -> str:
    # Name each job by what sets it apart from the others (all of it for a one-job sweep).
    varying = {o.split("=", 1)[0] for job in jobs for o in job if any(o not in other for other in jobs)}
    lines = [f"{len(bad)} of the sweep's {len(jobs)} jobs cannot run, so none was started "
             "(fix or drop them and start the sweep again):"]
    for i, why in bad.items():
        name = " ".join(o for o in jobs[i] if not varying or o.split("=", 1)[0] in varying)
        lines.append(f"  job #{i} [{name}]: {why}")
    return "\n".join(lines)
