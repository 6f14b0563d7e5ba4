"""Trap 14, all at once (issue 10, Must show): while one client submits, in one loop, a job
whose validation is a catastrophic pattern, a template bomb and a YAML alias bomb, another
client's `status` keeps its p99 under 250 ms and a `cancel` of a running job answers."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import pytest
from helpers import wait_for_job
from hostile import Latencies, Served, served, text_of
from test_hostile_regex import EVIL_TEXT, LOOKAROUND_PATTERN, RE2_PATTERN
from test_hostile_yaml import alias_bomb

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.runner import regex

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

STATUS_P99_SECONDS = 0.25
TEMPLATE_BOMB = "{{ (9**4096)**4096 }}"


def evil_regex_spec(n: int) -> dict[str, object]:
    return {
        "name": f"evil-regex-{n}",
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


def template_bomb_spec(n: int) -> dict[str, object]:
    return {"name": f"template-bomb-{n}", "sheets": [{"prompt": TEMPLATE_BOMB}]}


async def status_probe(s: Served, stop: anyio.Event, out: Latencies) -> None:
    """`status` (conductor and one job's detail) from client 1 until `stop`, each timed."""
    while not stop.is_set():
        t0 = time.monotonic()
        result = await s.call("status", {}, client=1)
        out.seconds.append(time.monotonic() - t0)
        if result.is_error:
            out.errors.append(text_of(result))
        await anyio.sleep(0.01)


async def test_other_clients_keep_their_answers_under_all_three_bombs(
    make_config: Callable[..., PodiumConfig], monkeypatch: pytest.MonkeyPatch, long_run: bool
) -> None:
    # The Python-re fallback of the lookaround pattern burns a CPU until this limit.
    monkeypatch.setattr(regex, "REGEX_TIME_LIMIT_SECONDS", 1.0)
    rounds = 30 if long_run else 4
    conductor = Conductor(make_config(max_concurrent_sheets=4))
    await conductor.start()
    latencies = Latencies()
    try:
        async with served(conductor, clients=2) as s:
            busy = await s.ok("submit_job", {"spec": {"name": "busy", "sheets": [
                {"prompt": "sleep 60"}]}}, client=1)  # fmt: skip
            stop = anyio.Event()
            evil_ids: list[str] = []
            refused: dict[str, int] = {"template": 0, "alias": 0}
            async with anyio.create_task_group() as tg:
                tg.start_soon(status_probe, s, stop, latencies)
                for n in range(rounds):
                    evil_ids.append(
                        (await s.ok("submit_job", {"spec": evil_regex_spec(n)}))["job_id"]
                    )
                    for tool in ("validate_spec", "submit_job"):
                        bomb = await s.call(tool, {"spec": template_bomb_spec(n)})
                        # validate_spec answers valid: false, submit_job a tool error.
                        said = text_of(bomb) + str(bomb.structured_content or "")
                        assert "bits" in said, said
                        refused["template"] += 1
                    yaml_bomb = await s.call("submit_job", {"spec_yaml": alias_bomb()})
                    assert yaml_bomb.is_error and "MAX_SPEC_SIZE" in text_of(yaml_bomb)
                    refused["alias"] += 1
                # The catastrophic validations run now: cancel the running job meanwhile.
                detail = await conductor.get_job(busy["job_id"])
                assert detail.sheets[0].status.value == "running", detail
                t0 = time.monotonic()
                cancelled = await s.ok("cancel", {"job_id": busy["job_id"]}, client=1)
                cancel_seconds = time.monotonic() - t0
                for job_id in evil_ids:
                    await wait_for_job(conductor, job_id, timeout=60)
                stop.set()
            assert cancelled["status"] == "cancelled"
            # SIGTERM ends `sleep` at once; the bound is the SPEC's grace + 2 s.
            assert cancel_seconds < conductor.config.kill_grace_seconds + 2, cancel_seconds
            for job_id in evil_ids:
                history = (await conductor.get_execution_history(job_id))[0]
                assert [v.passed for v in history[0].validations] == [False, False]
                assert "limit" in (history[0].validations[1].detail or "")
            # Nothing a bomb sent was stored: only the busy job and the regex jobs exist.
            jobs, _ = await conductor.list_jobs(limit=500)
            assert len(jobs) == rounds + 1
            assert refused == {"template": 2 * rounds, "alias": rounds}
    finally:
        await conductor.stop()
    assert not latencies.errors, latencies.errors[:3]
    assert len(latencies.seconds) >= 20, len(latencies.seconds)
    p99 = latencies.p99()
    print(f"status calls {len(latencies.seconds)}, p99 {p99 * 1000:.0f} ms, worst "
          f"{latencies.worst() * 1000:.0f} ms, cancel {cancel_seconds * 1000:.0f} ms")  # fmt: skip
    assert p99 < STATUS_P99_SECONDS, sorted(latencies.seconds)[-5:]
