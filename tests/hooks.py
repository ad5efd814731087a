"""Test-only: stop training with a real SIGTERM in the middle of an epoch, through tl's own
signal handling. In-process with `sigterm_after`, or in one job of a sweep with the Hydra
callback `SigtermMidEpoch` (`+hydra.callbacks.kill._target_=tests.hooks.SigtermMidEpoch`)."""

from __future__ import annotations

import contextlib
import os
import signal

import torch
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf


def _install(batches: int):
    count = 0

    def hook(module, args, output):
        nonlocal count
        # The loss module runs once per training batch with grad, and per eval batch without.
        if isinstance(module, torch.nn.CrossEntropyLoss) and torch.is_grad_enabled():
            count += 1
            if count == batches:
                os.kill(os.getpid(), signal.SIGTERM)

    return torch.nn.modules.module.register_module_forward_hook(hook)


@contextlib.contextmanager
def sigterm_after(batches: int):
    """SIGTERM this process during training batch number `batches` (counted across epochs)."""
    handle = _install(batches)
    try:
        yield
    finally:
        handle.remove()


class SigtermMidEpoch(Callback):
    """SIGTERM the process of sweep job `job_num` during its training batch `batches`."""

    def __init__(self, job_num: int, batches: int):
        self.job_num, self.batches, self._handle = job_num, batches, None

    def on_job_start(self, config, **kwargs) -> None:
        # A single run (not -m) has no job number: it counts as job 0.
        num = 0 if OmegaConf.is_missing(config.hydra.job, "num") else config.hydra.job.num
        if num == self.job_num:
            self._handle = _install(self.batches)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
