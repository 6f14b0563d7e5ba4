"""Trap 14, validation regexes: a catastrophic `content_regex` pattern can neither stall the
conductor nor run for ever (issue 10, item 1)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import wait_for_job
from hostile import PROBES, Latencies, probe_rounds, served

from podium.core.conductor import Conductor
from podium.core.runner import regex
from podium.core.runner.validations import run_validation

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
# 28 `a`s then `!`: Python's re needs minutes for either pattern below.
EVIL_TEXT = "a" * 28 + "!"
RE2_PATTERN = "^(a+)+$"  # RE2 runs it in linear time
LOOKAROUND_PATTERN = "^(a+)+(?<!a)$"  # RE2 cannot run lookbehind: Python re under a limit
LIMIT = 1.5  # the regex time limit in the test that runs such patterns in rounds


async def _check(ws: Path, pattern: str, text: str = EVIL_TEXT) -> SimpleNamespace:
    (ws / "f.txt").write_text(text)
    t0 = time.monotonic()
    result = await run_validation(
        SimpleNamespace(type="content_regex", path="f.txt", pattern=pattern),
        workspace=ws,
        attempt_started_at_ns=0,
        env=ENV,
        kill_grace_seconds=0.5,
    )
    return SimpleNamespace(result=result, seconds=time.monotonic() - t0)


async def test_catastrophic_pattern_answers_in_linear_time(tmp_path: Path) -> None:
    checked = await _check(tmp_path, RE2_PATTERN)
    assert not checked.result.passed
    assert "not found" in (checked.result.detail or "")
    assert checked.seconds < 0.5


async def test_pattern_re2_cannot_run_is_killed_at_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(regex, "REGEX_TIME_LIMIT_SECONDS", 0.5)
    checked = await _check(tmp_path, LOOKAROUND_PATTERN)
    assert not checked.result.passed
    assert "0.5 s limit" in (checked.result.detail or ""), checked.result.detail
    assert checked.seconds < 3


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        (r"(ab)\1", "xxabab", True),  # backreference: Python re in the child
        (r"(?<=x)y", "xy", True),
        (r"^done\Z", "done", True),
        (r"^done\Z", "done\n", False),  # Python's \Z is RE2's \z, not RE2's \Z
        (r"\d+", "٣", True),  # non-ASCII text: Python's Unicode \d
        (r"^[0-9]+$", "abc\n42\n", True),  # MULTILINE on either engine
        (r"[[:digit:]]", "5", False),  # to Python a set of [ : d i g t ], then a ]
        (r"[[:digit:]]", "d]", True),
        (r"\s", "\x1c", True),  # Python counts \x1c as whitespace, RE2 does not
        (r"(?i)HELLO", "hello", True),
    ],
)
async def test_answers_as_python_re_would(
    tmp_path: Path, pattern: str, text: str, expected: bool
) -> None:
    checked = await _check(tmp_path, pattern, text)
    assert checked.result.passed is expected, checked.result.detail


async def test_catastrophic_validation_leaves_other_clients_answered(
    conductor: Conductor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(regex, "REGEX_TIME_LIMIT_SECONDS", LIMIT)
    spec = {
        "name": "evil-regex",
        "retry": {"max_retries": 0},
        "sheets": [
            {
                "prompt": f"printf '{EVIL_TEXT}' > f.txt",
                "validations": [
                    {"type": "content_regex", "path": "f.txt", "pattern": p}
                    for p in (RE2_PATTERN, LOOKAROUND_PATTERN)
                ],
            }
        ],
    }
    lag = Latencies()
    details = []
    async with served(conductor) as s:
        other = await s.ok("submit_job", {"spec": {"name": "busy", "sheets": [
            {"prompt": "sleep 60"}]}})  # fmt: skip

        async def one_round() -> None:
            job = await s.ok("submit_job", {"spec": spec})
            details.append(await wait_for_job(conductor, job["job_id"], timeout=20))

        # Rounds until another client was probed PROBES times: each round runs the pattern
        # to its time limit, so a regex run on the event loop stalls every one of them.
        latencies, rounds = await probe_rounds(s, one_round, lag=lag)
        t0 = time.monotonic()
        cancelled = await s.ok("cancel", {"job_id": other["job_id"]}, client=1)
        cancel_seconds = time.monotonic() - t0
    for detail in details:
        assert detail.status.value == "failed"
        validations = (await conductor.get_execution_history(detail.job_id))[0][0].validations
        assert [v.passed for v in validations] == [False, False]
        assert "limit" in (validations[1].detail or "")
    assert cancelled["status"] == "cancelled" and cancel_seconds < 5
    assert not latencies.errors, latencies.errors
    # A pattern run on the loop blocks it for the whole limit in every round; a stall of
    # the machine that long is not what this bound meets.
    assert lag.worst() < LIMIT, (rounds, sorted(lag.seconds)[-5:])
    # A real 99th percentile: one stall of a loaded machine is one sample of hundreds.
    assert latencies.p99() < 0.5, (rounds, sorted(latencies.seconds)[-5:])
    assert len(latencies.seconds) >= PROBES, rounds
