"""Progress of a run: bars for epochs and batches on a terminal; elsewhere (logs, CI, a sweep's
job output) only the one log line per epoch that the training loop writes anyway."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator


def on_terminal() -> bool:
    return sys.stderr.isatty()


def epochs(n: int, start: int = 1) -> Iterator[int]:
    """start..n (a resumed run starts late), with a bar on a terminal."""
    if not on_terminal():
        yield from range(start, n + 1)
        return
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    # Console log lines (the per-epoch summary) go through tqdm.write, so they print above the
    # bars instead of tearing them; file handlers are left alone.
    with logging_redirect_tqdm(), tqdm(range(start, n + 1), desc="epochs", unit="epoch",
                                       dynamic_ncols=True) as bar:
        yield from bar


def batches(loader: Iterable, desc: str) -> Iterable:
    """`loader` itself, or wrapped in a bar that disappears when the pass is done."""
    if not on_terminal():
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True)
