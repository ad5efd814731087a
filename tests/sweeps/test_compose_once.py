"""A sweep's job configs are composed once: tl's check composes every job before the sweep
starts, Hydra's sweeper composes each again to check its batch and its launcher again to run it;
the sweeper gets a copy of the first composition and the launcher the first composition itself."""

from omegaconf import OmegaConf

from tl.sweeps.preflight import PENDING, compose_once, settle

PARENT = f"++hydra.job.env_set.TL_SWEEP_PARENT_RUN={PENDING}"


class Loader:
    """Hydra's config loader as far as a sweep uses it: counts its compositions."""

    def __init__(self):
        self.composed = 0

    def load_sweep_config(self, master_config, sweep_overrides):
        self.composed += 1
        hydra = OmegaConf.to_container(master_config.hydra)
        env = dict(o.lstrip("+").split("=", 1) for o in hydra["overrides"]["hydra"])
        return OmegaConf.create({"job": list(sweep_overrides), "n": self.composed,
                                 "hydra": {"overrides": hydra["overrides"],
                                           "job": {"env_set": {k.rsplit(".", 1)[1]: v for k, v in env.items()}}}})


def master(*hydra_overrides):
    return OmegaConf.create({"hydra": {"overrides": {"hydra": list(hydra_overrides)}}})


def test_the_sweepers_check_gets_a_copy_and_the_launcher_the_first_composition():
    loader, cfg = Loader(), master()
    compose_once(loader)
    checked = loader.load_sweep_config(cfg, ["optimizer.lr=0.1"])  # tl's check
    checked.n = 99  # what one holder does to its config the others do not see
    batch = loader.load_sweep_config(cfg, ["optimizer.lr=0.1"])  # the sweeper's batch check
    batch.n = 98
    launched = loader.load_sweep_config(cfg, ["optimizer.lr=0.1"])  # the launcher's
    assert loader.composed == 1 and launched.job == ["optimizer.lr=0.1"] and launched.n == 1
    loader.load_sweep_config(cfg, ["optimizer.lr=0.1"])  # held no longer: composed anew
    assert loader.composed == 2


def test_other_overrides_or_a_changed_master_config_compose_anew():
    loader, cfg = Loader(), master()
    compose_once(loader)
    loader.load_sweep_config(cfg, ["optimizer.lr=0.1"])
    loader.load_sweep_config(cfg, ["optimizer.lr=0.2"])
    cfg.hydra.overrides.hydra.append("hydra.job.verbose=true")
    loader.load_sweep_config(cfg, ["optimizer.lr=0.1"])
    other = master()
    loader.load_sweep_config(other, ["optimizer.lr=0.1"])
    assert loader.composed == 4


def test_the_parent_run_settled_later_reaches_the_master_and_every_held_job_as_a_composition_would():
    loader, cfg = Loader(), master("hydra.job.chdir=false", PARENT)
    compose_once(loader)
    loader.load_sweep_config(cfg, ["optimizer.lr=0.1"])  # tl's check, before the parent run exists
    settle(loader, cfg, "TL_SWEEP_PARENT_RUN", "abc123")
    assert list(cfg.hydra.overrides.hydra) == ["hydra.job.chdir=false", "++hydra.job.env_set.TL_SWEEP_PARENT_RUN=abc123"]
    loader.load_sweep_config(cfg, ["optimizer.lr=0.1"])  # the sweeper's batch check
    launched = loader.load_sweep_config(cfg, ["optimizer.lr=0.1"])
    fresh = Loader().load_sweep_config(cfg, ["optimizer.lr=0.1"])
    assert loader.composed == 1
    assert launched.hydra == fresh.hydra and launched.hydra.job.env_set.TL_SWEEP_PARENT_RUN == "abc123"
