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
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
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


class _Held:
    """A job's config composed by the check, lent to the sweeper's batch check as a copy, then
    given to the launcher."""

    def __init__(self, master: DictConfig, cfg: DictConfig):
        self.master, self.cfg, self.lent = master, cfg, False


def compose_once(loader) -> dict:
    """Compose each job's config once: this check composes every job, Hydra's basic sweeper
    composes each again to check its batch, and the launcher again to run it, about 0.15 s
    each (a third of a 5-run freeze sweep's later runs). Each composition is held for the two
    later calls, which ask for the same job of the same master config and Hydra overrides:
    the batch check gets a copy (its values' cache copied too, as Hydra does), the launcher
    the held config, which is then dropped, so a batch's configs are held, not a long sweep's.
    The sweep's parent run is not created yet when this check composes: its override carries
    `PENDING` until `settle` writes the run's id into the master config and what is held."""
    memo = getattr(loader, "_tl_composed", None)
    if memo is not None:
        return memo
    memo = {}
    compose = loader.load_sweep_config

    def load_sweep_config(master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        key = _key(master_config, sweep_overrides)
        held = memo.get(key)
        if held is not None and held.master is master_config:  # held, so its id was not reused
            if held.lent:
                del memo[key]
                return held.cfg
            held.lent = True
            return _copy(master_config, held.cfg)
        cfg = compose(master_config, sweep_overrides)
        memo[key] = _Held(master_config, _copy(master_config, cfg))
        return cfg

    loader.load_sweep_config = load_sweep_config
    loader._tl_composed = memo
    return memo


PENDING = "pending"  # a Hydra override's value until `settle` knows it


def _key(master_config: DictConfig, sweep_overrides) -> tuple:
    return (id(master_config), tuple(OmegaConf.to_container(master_config.hydra.overrides.hydra)),
            tuple(sweep_overrides))


def _copy(master_config: DictConfig, cfg: DictConfig) -> DictConfig:
    out = copy.deepcopy(cfg)
    OmegaConf.copy_cache(from_config=master_config, to_config=out)
    return out


def settle(loader, master_config: DictConfig, env_key: str, value: str) -> None:
    """The Hydra override `++hydra.job.env_set.<env_key>=PENDING` gets its value: in the master
    config and in every job config composed with it and still held (what composing them again
    with the value would give)."""
    pending, final = f"++hydra.job.env_set.{env_key}={PENDING}", f"++hydra.job.env_set.{env_key}={value}"
    memo = getattr(loader, "_tl_composed", None) or {}
    held = [(k, h) for k, h in memo.items() if h.master is master_config]
    for cfg in [master_config, *(h.cfg for _, h in held)]:
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            listed = cfg.hydra.overrides.hydra
            listed[list(listed).index(pending)] = final
            if cfg is not master_config:
                cfg.hydra.job.env_set[env_key] = value
    for k, h in held:
        del memo[k]
        memo[(k[0], tuple(OmegaConf.to_container(master_config.hydra.overrides.hydra)), k[2])] = h


def problems(config: DictConfig, jobs: list[list[str]], checks: Sequence[Callable],
             composed: list | None = None) -> dict[int, str]:
    """Job index -> why that job's config cannot work, for the jobs that cannot; `composed`,
    when given, receives each job's config that could be composed."""
    loader = GlobalHydra.instance().config_loader()
    found = {}
    for i, overrides in enumerate(jobs):
        try:
            cfg = loader.load_sweep_config(config, list(overrides))
            if composed is not None:
                composed.append(cfg)
            for check in checks:
                check(cfg)
        except USER_ERRORS as e:
            # One line per job; Hydra's "Config search path" listing says nothing about the job.
            found[i] = " ".join(str(e).split("Config search path")[0].split())
    return found


def check(config: DictConfig, check_names: Sequence[str]) -> DictConfig | None:
    """Raise `SweepConfigError` listing every job whose config fails a check; else the first
    job's config (None for a sweeper that does not list its jobs)."""
    jobs = job_overrides(config)
    if not jobs:
        return None
    composed: list[DictConfig] = []
    compose_once(GlobalHydra.instance().config_loader())
    bad = problems(config, jobs, [get_method(name) for name in check_names], composed)
    if bad:
        raise SweepConfigError(describe(jobs, bad))
    log.info("checked the configs of the sweep's %d jobs", len(jobs))
    return composed[0]


def describe(jobs: list[list[str]], bad: dict[int, str]) -> str:
    # Name each job by what sets it apart from the others (all of it for a one-job sweep).
    varying = {o.split("=", 1)[0] for job in jobs for o in job if any(o not in other for other in jobs)}
    lines = [f"{len(bad)} of the sweep's {len(jobs)} jobs cannot run, so none was started "
             "(fix or drop them and start the sweep again):"]
    for i, why in bad.items():
        name = " ".join(o for o in jobs[i] if not varying or o.split("=", 1)[0] in varying)
        lines.append(f"  job #{i} [{name}]: {why}")
    return "\n".join(lines)
