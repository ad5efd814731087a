"""`python -m tl.train` / `tl-train`: one run, or a sweep with `-m`.

The thin Hydra entry over `tl.training.run.train(cfg)`, the plain core that tests call directly.
"""

from __future__ import annotations

import os
import sys

from tl.runtime import allocator, collector, neighbours, wait_policy

wait_policy.apply()  # before anything below loads torch: OpenMP reads its wait policy only then
allocator.apply()
if __name__ == "__main__":  # `python -m tl.train`, not a library import (a test's, say)
    neighbours.mark()  # what other processes use while this one starts decides its threads
    collector.hold()  # main() releases it once the imports below are done

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from tl.errors import TLError  # noqa: E402
from tl.runtime import paths, signals  # noqa: E402
from tl.sweeps import sweep  # noqa: E402
from tl.training.run import RunResult, train  # noqa: E402

__all__ = ["main", "train", "RunResult"]


# An absolute path: the `tl-train` script's caller is no file next to conf/.
@hydra.main(version_base="1.3", config_path=str(paths.conf_dir()), config_name="train")
def _hydra_main(cfg: DictConfig) -> float:
    try:
        return train(cfg).best_val_acc
    except TLError as e:
        # A config, data or server error is a message, not a crash: no traceback, exit status 2.
        # A sweep's job still fails through Hydra, so the sweep goes on; HYDRA_FULL_ERROR=1
        # keeps the trace.
        if _single_run() and os.environ.get("HYDRA_FULL_ERROR") != "1":
            print(f"tl-train: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        raise


def _single_run() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN


def main() -> None:
    """Exit status: 0 when every run finished; 1 when a run (or a sweep's job) failed or was
    killed in a parallel sweep; 2 when a single run's config, data or tracking server is wrong
    (the message, no traceback); 128 + the signal's number when a signal stopped this process."""
    neighbours.mark()  # the `tl-train` script's start (kept where `python -m` marked earlier)
    collector.release()
    code, stopped_by = 0, None
    try:
        with signals.stop_on_signals():  # also while a launcher waits for a sweep's jobs
            _hydra_main()
    except KeyboardInterrupt as e:  # the run is KILLED in the store, and said how to resume
        code, stopped_by = signals.exit_code(e), signals.signal_name(e)
    finally:
        if not sweep.finish_all(stopped_by) and code == 0:
            code = 1
        collector.before_exit()
    if code:
        sys.exit(code)


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy: joblib's workers unpickle the task
    # function by module name, and functions of __main__ are pickled by value (and fail).
    from tl.train import main as _main

    _main()
