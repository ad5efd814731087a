"""Files a run writes and reads back: written atomically (a reader or a resumed run never sees
half a file), tensors loaded as data only."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import torch


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], writer: str = "") -> None:
    """`write(f)` into a temp file beside `path`, synced, then renamed over it: a kill mid-write
    leaves the previous file (or none), never a torn one. `writer` goes into the temp file's
    name, for whoever cleans up after a writer that died."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{writer + '.' if writer else ''}",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj, path: Path) -> None:
    """`torch.save` made atomic."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_tensors(path: Path, map_location="cpu"):
    """`torch.load` of a file tl or a user wrote: weights_only, so a checkpoint is data, never
    code to execute. Errors propagate; callers say what the file was meant to be."""
    return torch.load(path, map_location=map_location, weights_only=True)
