"""Benchmark rows about a run's neighbours in time and on the machine: what continuing a
stopped trial costs beyond its epochs, and how a tl epoch fares beside a CPU-bound process."""

from __future__ import annotations

import subprocess
import sys
import time

NEIGHBOUR = ("import torch\n"
             "a = torch.randn(768, 768)\n"
             "while True:\n"
             "    a = torch.tanh(a @ a)\n")


def neighbour() -> subprocess.Popen:
    """A CPU-bound neighbour: a plain PyTorch matmul loop on every core, until terminated."""
    proc = subprocess.Popen([sys.executable, "-c", NEIGHBOUR])
    time.sleep(3)  # its imports done: it is computing by the time the measurement starts
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def at_training_batch(batches: int, action):
    """Call `action()` during training batch number `batches` of this process (counted across
    epochs and runs); returns the hook's handle (`.remove()`). The loss module runs once per
    training batch with grad, and per eval batch without."""
    import torch

    count = 0

    def hook(module, args, output):
        nonlocal count
        if isinstance(module, torch.nn.CrossEntropyLoss) and torch.is_grad_enabled():
            count += 1
            if count == batches:
                action()

    return torch.nn.modules.module.register_module_forward_hook(hook)


def _interrupt():
    """Stop the run in this process, as a SIGTERM would."""
    import signal

    from tl.runtime import signals

    raise signals.Interrupted(signal.SIGTERM)


def continued(overrides: list[str], uri: str, stop_batch: int) -> dict:
    """A trial stopped at a rung (mid-epoch, at `stop_batch`) and continued in the same process:
    the continuation's seconds before its first epoch (MLflow reattach, model, features,
    checkpoint load) and its parts (`setup_seconds.*` of the continued run)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from mlflow.tracking import MlflowClient

    from tl.runtime.paths import conf_dir
    from tl.training.run import train

    def cfg(args):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return compose(config_name="train", overrides=args)

    handle = at_training_batch(stop_batch, _interrupt)
    try:
        train(cfg(overrides))
    except KeyboardInterrupt:
        pass
    finally:
        handle.remove()
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()], "attributes.status = 'KILLED'")
    start = time.perf_counter()
    train(cfg([f"+resume={run.info.run_id}", f"tracking.uri={uri}"]))
    wall = time.perf_counter() - start
    metrics = client.get_run(run.info.run_id).data.metrics
    parts = {k.removeprefix("setup_seconds."): v for k, v in metrics.items() if k.startswith("setup_seconds.")}
    after_first_epoch = sum(parts.get(k, 0.0) for k in ("epochs", "diagnostics", "exit"))
    return {"continue_wall_seconds": wall, "continue_overhead_seconds": wall - after_first_epoch,
            "parts": parts, "best_val_acc": metrics.get("best_val_acc")}
