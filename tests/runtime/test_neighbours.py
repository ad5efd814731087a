"""A run's torch threads leave the cores other processes were using as it started (read once,
from the kernel's CPU counters), keep every usable CPU when nothing says otherwise, and hold a
pinned count (a resumed run's, a reproduction's) whatever the load."""

import os
import subprocess
import sys
import time

import pytest
import torch

from tl.runtime import machine, neighbours


@pytest.fixture
def threads(monkeypatch):
    monkeypatch.setattr(neighbours, "_state", {})
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_leave_the_cores_a_cpu_bound_neighbour_takes(threads):
    cores = machine.usable_cpus()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(len(os.sched_getaffinity(0)))]
    try:
        time.sleep(0.5)
        neighbours.mark()
        time.sleep(1.5)  # this process idles: the window sees the neighbours alone
        assert machine.fit_threads() == max(1, cores - int(neighbours.others() + 0.25)) < max(cores, 2)
        assert "other processes used" in machine.THREADS_REASON
    finally:
        for p in hogs:
            p.kill()
            p.wait()


def test_the_first_answer_holds_for_every_later_run_of_the_process(threads):
    neighbours.mark()
    time.sleep(0.6)
    first = neighbours.others()
    assert first is not None and neighbours.others() == first


def test_without_a_mark_a_run_keeps_every_usable_cpu(threads):
    torch.set_num_threads(machine.usable_cpus())
    assert neighbours.others() is None
    assert machine.fit_threads() == machine.usable_cpus()


def test_a_pinned_count_holds_whatever_the_load_and_ends_with_its_block(threads):
    with machine.pinned_threads(1):
        assert machine.fit_threads() == 1 and "pinned" in machine.THREADS_REASON
    assert "pinned" not in (machine.fit_threads() and machine.THREADS_REASON)


def test_a_count_set_in_the_config_holds_whatever_the_load(threads):
    assert machine.fit_threads(1) == 1 and machine.THREADS_REASON == "trainer.threads=1"


def test_a_count_that_is_not_a_whole_number_is_refused_naming_the_key(threads):
    from tl.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.threads='two' must be auto or a whole number"):
        machine.fit_threads("two")


def test_importing_the_commands_as_a_library_opens_no_window():
    code = ("import tl.train, tl.cli.main; from tl.runtime import neighbours;"
            "assert 'mark' not in neighbours._state and neighbours.others() is None")
    subprocess.run([sys.executable, "-c", code], check=True)
