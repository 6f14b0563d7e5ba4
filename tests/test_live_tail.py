"""A running sheet's `output_tail` is what it printed so far (SPEC "Job detail"), on every
surface (`status`, the checkpoint resource, `podium status JOB`), from the attempt's memory:
bounded to 2 KiB, never cut inside a character, kept while the sheet is paused, and the
store's own tail once the attempt ends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from test_conductor import conductor_client
from test_transports import call, make_home, podium_cli, read_text

from podium.core.checkpoint import job_detail
from podium.core.conductor import Conductor
from podium.core.models import JobStatus, SheetStatus, utcnow
from podium.core.runner.logs import TailBuffer
from podium.core.store.rows import JobRow, SheetRow
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio

# Prints a line, then waits for the test to create go-N before printing the next one.
STEPS = (
    "echo line-1; until [ -f go-1 ]; do sleep 0.05; done; "
    "echo line-2; until [ -f go-2 ]; do sleep 0.05; done; echo line-3"
)


@pytest.fixture
async def client(conductor: Conductor) -> AsyncIterator[Client]:
    server = PodiumServer(conductor)
    async with server.running(), Client(server.mcp) as c:
        yield c


async def _sheet(client: Client, job_id: str, num: int = 1) -> dict[str, Any]:
    detail = await call(client, "status", {"job_id": job_id})
    sheet: dict[str, Any] = detail["sheets"][num - 1]
    return sheet


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.05)


async def _tail_shows(client: Client, job_id: str, text: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def shows() -> bool:
        seen.update(await _sheet(client, job_id))
        return text in (seen.get("output_tail") or "")

    await _until(shows)
    return seen


async def test_status_shows_the_tail_growing_while_the_sheet_runs(client: Client) -> None:
    job = await call(
        client, "submit_job", {"spec": {"name": "steps", "sheets": [{"prompt": STEPS}]}}
    )
    job_id, workspace = job["job_id"], Path(job["workspace"])

    first = await _tail_shows(client, job_id, "line-1")
    assert first["status"] == "running" and first["output_tail"] == "line-1\n"
    # The checkpoint resource is the same view.
    checkpoint = json.loads(await read_text(client, f"podium://jobs/{job_id}/checkpoint"))
    assert checkpoint["sheets"][0]["output_tail"] == "line-1\n"

    (workspace / "go-1").touch()
    second = await _tail_shows(client, job_id, "line-2")
    assert second["status"] == "running" and second["output_tail"] == "line-1\nline-2\n"

    (workspace / "go-2").touch()
    done = await call(client, "status", {"job_id": job_id, "wait_seconds": 20})
    while done["status"] != "completed":
        done = await call(client, "status", {"job_id": job_id, "wait_seconds": 20})
    assert done["sheets"][0]["output_tail"] == "line-1\nline-2\nline-3\n"


async def test_a_long_running_tail_is_bounded_and_whole_characters(client: Client) -> None:
    """3 KiB of two-byte characters, then a lone first byte of a character (its pipe chunk
    ends mid-character): the live tail is at most 2 KiB, starts and ends on whole
    characters, and shows the rest once it arrives."""
    prompt = (
        "printf 'head-'; for i in $(seq 1 1536); do printf 'é'; done; printf '\\n'; "
        "printf 'end-\\303'; until [ -f go-1 ]; do sleep 0.05; done; printf '\\251\\n'; "
        "until [ -f go-2 ]; do sleep 0.05; done"
    )
    job = await call(
        client, "submit_job", {"spec": {"name": "wide", "sheets": [{"prompt": prompt}]}}
    )
    job_id, workspace = job["job_id"], Path(job["workspace"])

    sheet = await _tail_shows(client, job_id, "end-")
    tail = sheet["output_tail"]
    assert len(tail.encode()) <= 2048
    assert "\ufffd" not in tail and "head-" not in tail
    assert tail.endswith("é\nend-") and set(tail[: tail.index("\n")]) == {"é"}

    (workspace / "go-1").touch()
    sheet = await _tail_shows(client, job_id, "end-é\n")
    assert len(sheet["output_tail"].encode()) <= 2048 and "\ufffd" not in sheet["output_tail"]
    (workspace / "go-2").touch()


async def test_a_paused_sheet_keeps_showing_what_it_printed(client: Client) -> None:
    job = await call(
        client, "submit_job", {"spec": {"name": "frozen", "sheets": [{"prompt": STEPS}]}}
    )
    job_id, workspace = job["job_id"], Path(job["workspace"])
    await _tail_shows(client, job_id, "line-1")
    await call(client, "pause", {"job_id": job_id, "immediate": True})
    (workspace / "go-1").touch()  # it is SIGSTOPped: nothing more is printed
    detail = await call(client, "status", {"job_id": job_id})
    assert detail["status"] == "paused"
    assert detail["sheets"][0]["status"] == "running"
    assert detail["sheets"][0]["output_tail"] == "line-1\n"
    await call(client, "cancel", {"job_id": job_id})


async def test_the_live_tail_is_read_from_memory_not_the_log(
    client: Client, conductor: Conductor
) -> None:
    """Views of running sheets read no file: with the log file gone, the tail still grows."""
    spec = {"name": "many", "sheets": [{"prompt": STEPS} for _ in range(4)]}
    spec["concurrency"] = {"max_parallel_sheets": 4}
    job = await call(client, "submit_job", {"spec": spec})
    job_id, workspace = job["job_id"], Path(job["workspace"])

    async def all_printed() -> bool:
        detail = await call(client, "status", {"job_id": job_id})
        return all(s["output_tail"] == "line-1\n" for s in detail["sheets"])

    await _until(all_printed)
    logs = list((conductor.config.logs_dir / job_id).glob("sheet-*.log"))
    assert len(logs) == 4
    for log in logs:
        log.unlink()
    (workspace / "go-1").touch()

    async def all_grew() -> bool:
        detail = await call(client, "status", {"job_id": job_id})
        return all(s["output_tail"] == "line-1\nline-2\n" for s in detail["sheets"])

    await _until(all_grew)
    (workspace / "go-2").touch()


def _rows(tail: str | None) -> tuple[JobRow, list[SheetRow]]:
    now = utcnow()
    job = JobRow("j", "j", JobStatus.RUNNING, "/w", "fp", 1, now, now, started_at=now)
    sheet = SheetRow("j", 1, None, SheetStatus.RUNNING, "shell", now, attempts=2, output_tail=tail)
    return job, [sheet]


def test_a_sheet_run_elsewhere_keeps_the_stored_tail() -> None:
    """No live output here (another conductor on a shared store runs it): the store's tail
    stays; the attempt number the view asks for is the row's."""
    job, sheets = _rows("from an earlier attempt\n")
    asked: list[tuple[str, int, int, int]] = []

    def nowhere(job_id: str, sheet_num: int, attempt: int, max_bytes: int) -> str | None:
        asked.append((job_id, sheet_num, attempt, max_bytes))
        return None

    detail = job_detail(job, sheets, 1, None, nowhere)
    assert detail.sheets[0].output_tail == "from an earlier attempt\n"
    assert asked == [("j", 1, 2, 2048)]


def test_the_recent_text_of_a_tail_buffer() -> None:
    buffer = TailBuffer(64)
    assert buffer.recent_text(8) == ""
    buffer.write("añb".encode())
    assert buffer.recent_text(8) == "añb"
    assert buffer.recent_text(2) == "b"  # the cut fell inside ñ
    buffer.write(b"\xe2\x82")  # two of the three bytes of €
    assert buffer.recent_text(8) == "añb"
    buffer.write(b"\xac")
    assert buffer.recent_text(8) == "añb€"
    same = buffer.recent_text(8)
    assert buffer.recent_text(8) is same  # nothing written since: not decoded again


async def test_podium_status_shows_the_live_tail(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    assert podium_cli(home, "start", "--detach").returncode == 0
    async with conductor_client(home) as client:
        spec = {"name": "cli-tail", "sheets": [{"prompt": STEPS}]}
        job = await call(client, "submit_job", {"spec": spec, "job_id": "cli-tail"})
        await _tail_shows(client, "cli-tail", "line-1")
        shown = json.loads(podium_cli(home, "status", "cli-tail", "--json").stdout)
        assert shown["sheets"][0]["status"] == "running"
        assert shown["sheets"][0]["output_tail"] == "line-1\n"
        await call(client, "cancel", {"job_id": job["job_id"]})
