"""A sweep's job configs are composed once for the launch: Hydra's sweeper checks a batch by
composing every job, and its launcher composes each again; the second gets a copy of the first."""

from omegaconf import OmegaConf

from tl.sweeps.preflight import compose_once


class Loader:
    """Hydra's config loader as far as a sweep uses it: counts its compositions."""

    def __init__(self):
        self.composed = 0

    def load_sweep_config(self, master_config, sweep_overrides):
        self.composed += 1
        return OmegaConf.create({"job": list(sweep_overrides), "n": self.composed})


def master(*hydra_overrides):
    return OmegaConf.create({"hydra": {"overrides": {"hydra": list(hydra_overrides)}}})


def test_a_job_composed_again_is_a_copy_of_its_first_composition_once():
    loader, cfg = Loader(), master()
    compose_once(loader)
    first = loader.load_sweep_config(cfg, ["optimizer.lr=0.1"])  # the sweeper's batch check
    first.n = 99  # what one holder does to its config the other does not see
    again = loader.load_sweep_config(cfg, ["optimizer.lr=0.1"])  # the launcher's
    assert loader.composed == 1 and again.job == ["optimizer.lr=0.1"] and again.n == 1
    loader.load_sweep_config(cfg, ["optimizer.lr=0.1"])  # held no longer: composed anew
    assert loader.composed == 2


def test_other_overrides_or_a_changed_master_config_compose_anew():
    loader, cfg = Loader(), master()
    compose_once(loader)
    loader.load_sweep_config(cfg, ["optimizer.lr=0.1"])
    loader.load_sweep_config(cfg, ["optimizer.lr=0.2"])
    cfg.hydra.overrides.hydra.append("hydra.job.env_set.TL_SWEEP_PARENT_RUN=abc")  # the sweep callback's
    loader.load_sweep_config(cfg, ["optimizer.lr=0.1"])
    other = master()
    loader.load_sweep_config(other, ["optimizer.lr=0.1"])
    assert loader.composed == 4
