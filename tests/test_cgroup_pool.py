"""Attempt cgroups are reused between attempts (issue 9's dispatch work): a reused group
carries the `max_processes` of now, not of when it was made (a reload may have lowered it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from podium.core.runner import cgroups
from podium.core.runner.runner import attempt_marker


def test_a_reused_group_gets_the_limit_a_reload_set_meanwhile(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    if not cgroups.enable(home, 50):
        pytest.skip("no writable pids cgroup hierarchy on this machine")
    try:
        first = attempt_marker(home, "job", 1, 1)
        with cgroups.joined({cgroups.MARK_VARIABLE: first}):
            group = cgroups._group_of(first)
            assert group is not None
            assert (group / "pids.max").read_text().strip() == "50"
            cgroups.enable(home, 20)  # `podium reload` with a lower max_processes
        cgroups.release(first)
        second = attempt_marker(home, "job", 2, 1)
        with cgroups.joined({cgroups.MARK_VARIABLE: second}):
            reused = cgroups._group_of(second)
            assert reused == group, "the emptied group is kept for the next attempt"
            assert (reused / "pids.max").read_text().strip() == "20"
        cgroups.release(second)
    finally:
        cgroups.disable(home)
