"""How tl's OpenMP threads wait for work, chosen before torch loads its OpenMP runtime.

By default an OpenMP thread that runs out of work spins for a while before it sleeps. Beside a
neighbour (another CPU-heavy process, or another job of tl's own parallel sweep) those spinning
threads take the cores the others need: an epoch measured 3-10x slower. Passive waiting (sleep
at once) gives the idle cores away. OpenMP reads the setting once, when torch loads it, so
`apply()` runs at tl's entry before anything imports torch; a value the user set is kept.
This module imports nothing heavy for the same reason."""

from __future__ import annotations

import os
import sys

PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}  # GNU OpenMP; Intel OpenMP
MARK = "TL_WAIT_POLICY"  # says tl set it: inherited by the sweep's worker processes with it


def apply() -> None:
    """Passive OpenMP waits for this process and the ones it starts, unless the user set them
    or torch is already loaded (then it is too late, and nothing is changed)."""
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return
    for key, value in PASSIVE.items():
        os.environ.setdefault(key, value)
    os.environ[MARK] = "tl"


def describe() -> str:
    """The wait policy this process runs with, and who chose it: logged with every run."""
    policy = os.environ.get("OMP_WAIT_POLICY")
    if policy is None:
        return "default (spin, then sleep): torch was loaded before tl's entry"
    if os.environ.get(MARK) == "tl":
        return f"{policy} (tl's default: idle threads leave the cores to other processes)"
    return f"{policy} (set by the user)"
