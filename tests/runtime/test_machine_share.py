"""tl takes the CPUs it may use and lets idle threads sleep, so a neighbour costs it its share."""

import os
import subprocess
import sys

import torch

from tl.runtime import machine, wait_policy


def cgroup(tmp_path, cpu_max: str):
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    return tmp_path


def test_a_cgroup_quota_caps_the_usable_cpus_below_the_affinity(tmp_path):
    allowed = len(os.sched_getaffinity(0))
    assert machine.usable_cpus(cgroup(tmp_path, "50000 100000")) == 1  # half a CPU still gets a thread
    assert machine.usable_cpus(cgroup(tmp_path, "max 100000")) == allowed
    assert machine.usable_cpus(cgroup(tmp_path, f"{allowed * 300000} 100000")) == allowed


def test_a_cgroup_v1_quota_counts_too_and_no_cgroup_means_the_affinity(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert machine.usable_cpus(tmp_path) == 1
    assert machine.usable_cpus(tmp_path / "absent") == len(os.sched_getaffinity(0))


def test_torch_never_gets_more_threads_than_usable_cpus(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(before + 3)
        monkeypatch.setattr(machine, "usable_cpus", lambda: 1)
        assert machine.fit_threads() == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def entry_env(**env) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", wait_policy.MARK)}
    code = ("import os, tl.train, torch; from tl.runtime import wait_policy; "
            "print(os.environ.get('OMP_WAIT_POLICY'), '|', wait_policy.describe())")
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_tl_entry_sets_passive_waits_before_torch_loads_and_says_so():
    policy, described = entry_env().split(" | ")
    assert policy == "PASSIVE" and "tl's default" in described


def test_a_wait_policy_the_user_set_is_kept_and_logged_as_theirs():
    policy, described = entry_env(OMP_WAIT_POLICY="ACTIVE").split(" | ")
    assert policy == "ACTIVE" and described == "ACTIVE (set by the user)"


def test_every_run_logs_its_usable_cpus_and_wait_policy():
    params = machine.Runtime(torch.device("cpu"), "fp32", "", False, 0, "").as_params()
    assert params["runtime.usable_cpus"] == str(machine.usable_cpus())
    assert params["runtime.omp_wait_policy"] == wait_policy.describe()
