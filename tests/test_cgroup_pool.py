"""Attempt cgroups are reused between attempts (issue 9's dispatch work): a reused group
carries the `max_processes` of now, not of when it was made (a reload may have lowered it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from podium.core.runner import cgroups
from podium.core.runner.runner import attempt_marker


def pids_group_of_this_thread() -> str:
    lines = Path("/proc/thread-self/cgroup").read_text().splitlines()
    return next((line for line in lines if ":pids:" in line), "")


def test_a_reused_group_gets_the_limit_a_reload_set_meanwhile(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    if not cgroups.enable(home, 50):
        pytest.skip("no writable pids cgroup hierarchy on this machine")
    outside = pids_group_of_this_thread()
    try:
        first = attempt_marker(home, "job", 1, 1)
        # As a spawn does: this thread is in the attempt's group only around the fork.
        with cgroups.joined({cgroups.MARK_VARIABLE: first}):
            group = cgroups._group_of(first)
            assert group is not None
            assert (group / "pids.max").read_text().strip() == "50"
        # `podium reload` with a lower max_processes while the attempt runs (the conductor's
        # loop thread does this, never from inside an attempt's group).
        cgroups.enable(home, 20)
        cgroups.release(first)
        second = attempt_marker(home, "job", 2, 1)
        with cgroups.joined({cgroups.MARK_VARIABLE: second}):
            reused = cgroups._group_of(second)
            assert reused == group, "the emptied group is kept for the next attempt"
            assert (reused / "pids.max").read_text().strip() == "20"
        cgroups.release(second)
    finally:
        cgroups.disable(home)
    assert pids_group_of_this_thread() == outside, "the thread is back where it was"
