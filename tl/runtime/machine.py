"""Per-machine choices (device, precision, workers) and seeding.

Precision and similar speed defaults depend on the machine, so `auto` resolves here from a
capability check and the choice is logged with every run: a reproduction elsewhere can tell a
machine difference from a code difference.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tl.errors import ConfigError, not_one_of
from tl.runtime import allocator, neighbours, wait_policy

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    precision_reason: str
    channels_last: bool
    num_workers: int
    cpu: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]

    def as_params(self) -> dict[str, str]:
        return {
            "runtime.device": str(self.device),
            "runtime.precision": self.precision,
            "runtime.precision_reason": self.precision_reason,
            "runtime.channels_last": str(self.channels_last),
            "runtime.num_workers": str(self.num_workers),
            "runtime.cpu": self.cpu,
            "runtime.torch_threads": str(torch.get_num_threads()),
            "runtime.threads_reason": THREADS_REASON,
            "runtime.usable_cpus": str(usable_cpus()),
            "runtime.omp_wait_policy": wait_policy.describe(),
            "runtime.malloc": allocator.describe(),
        }


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: those its affinity allows, capped by its cgroup's CPU
    quota (a container limited to 1.5 CPUs gets 2 threads' worth, not the host's 64)."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        allowed = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    return max(1, min(allowed, math.ceil(quota))) if quota else allowed


def _cgroup_quota(cgroup: Path) -> float | None:
    """CPUs' worth of time the cgroup grants per period (v2 `cpu.max`, v1 cfs files); None: no limit."""
    try:
        if (cgroup / "cpu.max").is_file():
            quota, period = (cgroup / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = cgroup / "cpu"
        quota = int((v1 / "cpu.cfs_quota_us").read_text())
        return None if quota <= 0 else quota / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


_PINNED: list[int] = []  # the innermost `pinned_threads`


@contextlib.contextmanager
def pinned_threads(n: int | None):
    """torch's threads exactly `n` (at most the usable CPUs) for the runs inside: a resumed run
    or a reproduction computes with the count its original had (a reduction split over another
    number of threads gives other numbers)."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    _PINNED.append(int(n))
    try:
        yield
    finally:
        _PINNED.pop()
        torch.set_num_threads(before)  # a later run of this process starts from its own count


def fit_threads(spec="auto") -> int:
    """torch's intra-op threads for a run: exactly a pinned count (a resumed run's, a
    reproduction's); `trainer.threads=N`: N; `auto`: the usable CPUs (affinity, cgroup quota:
    more threads than CPUs only wait for each other) less what other processes were using while
    this process started (`tl.runtime.neighbours`, read once per process).

    Beside a CPU-bound neighbour an op split over every core waits at each barrier for the
    thread the neighbour displaced (resnet18 epoch on 2 cores beside a 2-thread matmul loop:
    27.6 s with 2 threads, 12.2 s with 1). The count changes a run's last digits (a reduction
    split another way), so it is logged with the run, and a resumed run or a reproduction pins
    the original's; `trainer.threads=N` computes the same way whatever the load."""
    global THREADS_REASON
    n = usable_cpus()
    if _PINNED:
        torch.set_num_threads(max(1, min(n, _PINNED[-1])))
        THREADS_REASON = f"pinned to the original run's {_PINNED[-1]}"
        return torch.get_num_threads()
    if spec != "auto":
        if isinstance(spec, bool) or not isinstance(spec, int) or spec < 1:
            raise ConfigError(f"trainer.threads={spec!r} must be auto or a whole number >= 1")
        torch.set_num_threads(min(n, spec))
        THREADS_REASON = f"trainer.threads={spec}" + (f", at most the {n} usable CPU(s)" if spec > n else "")
        return torch.get_num_threads()
    # Only ever lowered here: what the process was given (OMP_NUM_THREADS, torch's physical
    # cores, a parallel sweep job's share or its launcher's grant) may be fewer.
    cap = min(n, torch.get_num_threads())
    free = neighbours.free_cores(n)
    busy = neighbours.others()
    torch.set_num_threads(cap if free is None else max(1, min(cap, free)))
    THREADS_REASON = (f"{n} usable CPU(s)"
                      + (f", OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}" if os.environ.get("OMP_NUM_THREADS") else "")
                      + ("" if busy is None else f", other processes used {busy:.1f} of them as this process started"))
    return torch.get_num_threads()


THREADS_REASON = ""  # why torch has the threads it has: logged with the run


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def pick_device(spec: str) -> torch.device:
    spec = str(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise ConfigError(
            f"trainer.device={spec!r} is not a device: use auto, cpu, cuda or cuda:N ({e})"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={spec!r} but no CUDA GPU is visible: use auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"trainer.device={spec!r} is not supported: use auto, cpu, cuda or cuda:N")
    return device


def pick_precision(spec: str, device: torch.device) -> tuple[str, str]:
    """Autocast precision and why it was chosen."""
    spec = str(spec)
    if spec != "auto":
        if spec not in PRECISIONS:
            raise not_one_of("trainer.precision", spec, ("auto", *PRECISIONS))
        if spec == "fp16" and device.type == "cpu":
            raise ConfigError("trainer.precision=fp16 is CUDA only: use bf16 or fp32 on CPU")
        return spec, "set in config"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "cuda supports bf16"
        return "fp16", "cuda without bf16"
    if device.type == "cpu":
        choice = _cpu_choice()
        rates = ", ".join(f"{k} {v:.0f}/s" for k, v in choice["rates"].items())
        return choice["precision"], f"cpu probe: {rates}"
    return "fp32", f"{device.type}: fp32"


def pick_num_workers(spec, in_memory: bool = False) -> int:
    """`auto`: no workers for in-memory data (augmenting a decoded uint8 tensor takes well under
    a millisecond, less than shipping the batch between processes), else one per core, max 4."""
    if spec == "auto":
        return 0 if in_memory else min(4, os.cpu_count() or 1)
    n = int(spec)
    if n < 0:
        raise ConfigError(f"trainer.num_workers={n} must be >= 0 (or auto)")
    return n


def _cpu_choice() -> dict:
    from tl.runtime import probe

    # bf16 autocast pays off only with native bf16 dot products; without them oneDNN
    # emulates and training runs slower than fp32.
    return probe.cpu_choice(cpu_name(), bool(cpu_flags() & {"avx512_bf16", "amx_bf16"}))


def pick_channels_last(spec, device: torch.device) -> bool:
    if spec == "auto":
        return device.type == "cuda" or (device.type == "cpu" and _cpu_choice()["channels_last"])
    if isinstance(spec, bool):
        return spec
    raise ConfigError(f"trainer.channels_last={spec!r} must be auto, true or false")


def resolve_runtime(trainer_cfg) -> Runtime:
    fit_threads(trainer_cfg.get("threads", "auto"))
    device = pick_device(trainer_cfg.device)
    precision, reason = pick_precision(trainer_cfg.precision, device)
    return Runtime(
        device=device,
        precision=precision,
        precision_reason=reason,
        channels_last=pick_channels_last(trainer_cfg.channels_last, device),
        num_workers=pick_num_workers(trainer_cfg.num_workers),
        cpu=cpu_name(),
    )


def seed_everything(seed: int, deterministic: bool) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    g = torch.Generator()
    g.manual_seed(seed)
    return g
