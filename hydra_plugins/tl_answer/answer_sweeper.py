"""`hydra/sweeper=answer`: a fair answer under a budget (screen -> race -> confirm; the logic is
in `tl.answer`). Registered like hydra-optuna-sweeper: Hydra imports every module of the
`hydra_plugins` namespace, which stores this config under `hydra/sweeper`. No
`from __future__ import annotations` here: Hydra loads plugin modules outside sys.modules, where
dataclasses cannot resolve annotations written as strings."""

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig

log = logging.getLogger(__name__)


_STRATEGIES = ("freeze", "partial_freeze", "lp_ft", "finetune", "gradual_unfreeze")


@dataclass
class AnswerSweeperConf:
    _target_: str = "hydra_plugins.tl_answer.answer_sweeper.AnswerSweeper"
    budget: str = "30m"                   # wall clock for the whole answer: 20m, 1h30m, 900s
    models: Optional[List[str]] = None    # presets; null: every pretrained preset with weights on this machine
    strategies: List[str] = field(default_factory=lambda: ["freeze", "partial_freeze", "lp_ft", "finetune"])
    recipes: str = "default"              # conf/answer/<recipes>.yaml: lr grids, epochs, rungs, seeds
    # Per-strategy lr grids over the recipes' (null: the recipes'), e.g. hydra.sweeper.lr.freeze=[0.1,0.03]
    lr: Dict[str, Any] = field(default_factory=lambda: {s: None for s in _STRATEGIES})
    epochs: Optional[int] = None          # null: the recipes' (as min_epochs, eta, seeds, max_finalists)
    min_epochs: Optional[int] = None
    eta: Optional[int] = None
    seeds: Optional[int] = None
    max_finalists: Optional[int] = None
    max_batch_size: Optional[int] = None  # jobs per launch; null: the launcher's n_jobs (1 for basic)
    resume: Optional[str] = None          # an earlier answer's parent run: reuse its finished trials


ConfigStore.instance().store(group="hydra/sweeper", name="answer", node=AnswerSweeperConf, provider="tl")


class AnswerSweeper(Sweeper):
    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = params
        self.launcher = self.config = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        from tl.answer import sweeper

        return sweeper.run(self.params, arguments, self.launcher, self.hydra_context.config_loader, self.config)
