"""How freed tensor memory is kept for the next batch, chosen at tl's entry.

glibc's malloc gives every block above its mmap threshold (which grows with use, to 32 MiB at
most on 64-bit) a mapping of its own and unmaps it when freed. A batch's large activations
(lite0 at batch 32 in bf16: 77 MB tensors) are such blocks, so every batch gets fresh pages
that the kernel must fault in and zero. Measured on a quiet 2-core Xeon, interleaved: lite0's
frozen pass over 794 images took 1.7M page faults, 3.9-4.6 s of system time and ran at
100-120 img/s; with every block taken from the heap (M_MMAP_MAX=0) and up to 1 GiB of freed
heap kept (M_TRIM_THRESHOLD), 0.27M faults, 0.7-0.8 s and 149-170 img/s; resnet18 finetune, 2
epochs: 1.8-2.2M faults against 0.53M, the run 5-17% shorter. The price is memory kept: what
a run frees stays with the process until `release()` (peak RSS: +0.15 GB for that pass alone,
unchanged for a whole lite0 freeze run, 1430 MiB).

glibc reads the same settings from the environment (MALLOC_MMAP_MAX_, MALLOC_TRIM_THRESHOLD_),
so `apply()` sets them there too, for the processes a sweep's launcher starts. Settings the
user made (those variables, GLIBC_TUNABLES) and another allocator preloaded (jemalloc,
tcmalloc, mimalloc) are kept. This module imports nothing heavy: it runs before torch loads.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt's parameter numbers (malloc.h)
TRIM_BYTES = 1 << 30  # a freed heap top up to this stays mapped: a few batches' activations
SETTINGS = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(TRIM_BYTES)}
MARK = "TL_MALLOC"  # says tl set them: inherited by a sweep's worker processes with them
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
_state: dict = {}


def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _users_choice() -> str | None:
    """What the user chose instead, if anything."""
    preload = os.environ.get("LD_PRELOAD", "")
    other = next((name for name in _OTHER_ALLOCATORS if name in preload), None)
    if other:
        return f"{other} (LD_PRELOAD)"
    if os.environ.get(MARK) == "tl":
        return None  # a worker of tl's own: the settings below are tl's
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(
            k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        return "glibc malloc as the user set it (MALLOC_*_ / GLIBC_TUNABLES)"
    return None


def apply() -> None:
    """Heap reuse for this process and the ones it starts, unless the user chose otherwise or
    this is not glibc (then nothing is changed)."""
    if "described" in _state:
        return
    libc, theirs = _libc(), _users_choice()
    if theirs:
        _state["described"] = theirs
        return
    if libc is None:
        _state["described"] = "the platform's malloc (not glibc)"
        return
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES) == 1
    if not ok:
        _state["described"] = "glibc malloc defaults (mallopt refused tl's settings)"
        return
    os.environ.update(SETTINGS)
    os.environ[MARK] = "tl"
    _state["libc"] = libc  # what `release` trims: only memory that tl's settings kept
    _state["described"] = (f"glibc heap reuse: M_MMAP_MAX=0, M_TRIM_THRESHOLD={TRIM_BYTES >> 20} MiB "
                           "(tl's default: a batch's activations reuse the last batch's pages)")


def describe() -> str:
    """The allocator settings this process runs with, and who chose them: logged with every run."""
    if "described" in _state:
        return _state["described"]
    if os.environ.get(MARK) == "tl":  # a sweep's worker: glibc read tl's settings as it started
        return "glibc heap reuse, inherited from tl's entry (MALLOC_MMAP_MAX_=0)"
    return "glibc malloc defaults (not a tl command's process)"


def release() -> None:
    """Give the memory a finished run freed back to the system (the kept heap included): a
    sweep's next run, or whatever runs after tl in this process, starts from what is in use."""
    if "libc" in _state:
        _state["libc"].malloc_trim(0)
