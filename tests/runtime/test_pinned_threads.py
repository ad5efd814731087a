"""A run's torch threads: every usable CPU, unless pinned (a resumed run, a reproduction: the
count the original computed with, since a reduction split another way changes the numbers)."""

import pytest
import torch

from tl.runtime import machine


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_run_keeps_every_usable_cpu(threads):
    torch.set_num_threads(machine.usable_cpus())
    assert machine.fit_threads() == machine.usable_cpus()
    assert machine.THREADS_REASON.startswith(f"{machine.usable_cpus()} usable CPU")


def test_a_pinned_count_holds_and_ends_with_its_block(threads):
    torch.set_num_threads(machine.usable_cpus())
    with machine.pinned_threads(1):
        assert machine.fit_threads() == 1 and "pinned" in machine.THREADS_REASON
    assert machine.fit_threads() == machine.usable_cpus(), "a later run of the process is not pinned"
    assert "pinned" not in machine.THREADS_REASON
