"""A tl command keeps freed tensor memory for the next batch instead of handing it back and
faulting it in again, leaves a user's own allocator settings alone, and logs which it ran with."""

import json
import os
import subprocess
import sys

import torch

from tl.runtime import allocator, machine

# mallinfo2's fields (glibc >= 2.33): hblkhd = bytes in blocks malloc mapped on their own.
PROBE = """
import ctypes, json, os, sys
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None); libc.mallinfo2.restype = Info
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
if sys.argv[1] == "entry":
    import tl.train
import torch
from tl.runtime import allocator
big = torch.ones(256 << 20, dtype=torch.uint8)
mapped_alone = libc.mallinfo2().hblkhd
in_use = rss()
del big
dropped_on_free = in_use - rss()
allocator.release()
out = {"mapped_alone": mapped_alone, "given_back": in_use - rss(), "dropped_on_free": dropped_on_free,
       "described": allocator.describe(), "env": os.environ.get("MALLOC_MMAP_MAX_")}
print(json.dumps(out))
"""
MIB = 1 << 20


def probe(how: str, **env) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in (allocator.MARK, "LD_PRELOAD", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", PROBE, how], env={**clean, **env}, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_tl_command_takes_a_large_tensor_from_the_heap_and_keeps_it_when_freed():
    got = probe("entry")
    assert got["mapped_alone"] < 256 * MIB  # not a mapping of its own, unmapped when freed
    assert got["dropped_on_free"] < 16 * MIB  # freed, its pages stay: the next batch reuses them
    assert got["env"] == "0" and got["described"].startswith("glibc heap reuse")


def test_without_tl_s_entry_glibc_maps_a_large_tensor_on_its_own():
    got = probe("plain")
    assert got["mapped_alone"] >= 256 * MIB and got["dropped_on_free"] >= 240 * MIB  # unmapped at once
    assert got["described"].startswith("glibc malloc defaults")


def test_a_finished_run_gives_the_kept_memory_back():
    got = probe("entry")
    assert got["given_back"] >= 240 * MIB


def test_a_users_own_malloc_settings_are_kept_and_logged_as_theirs():
    got = probe("entry", MALLOC_TRIM_THRESHOLD_=str(64 * MIB))
    assert got["mapped_alone"] >= 256 * MIB and got["env"] is None
    assert "as the user set it" in got["described"]


def test_a_preloaded_allocator_is_left_alone():
    got = probe("entry", LD_PRELOAD="/nonexistent/libjemalloc.so.2")  # ld.so skips it, with a warning
    assert got["env"] is None and got["described"] == "jemalloc (LD_PRELOAD)"


def test_a_sweep_worker_inherits_tl_s_settings_and_says_so():
    got = probe("plain", **allocator.SETTINGS, **{allocator.MARK: "tl"})
    assert got["mapped_alone"] < 256 * MIB  # glibc read them from the environment as it started
    assert got["described"].startswith("glibc heap reuse, inherited")


def test_every_run_logs_its_allocator_settings():
    params = machine.Runtime(torch.device("cpu"), "fp32", "", False, 0, "").as_params()
    assert params["runtime.malloc"] == allocator.describe()
