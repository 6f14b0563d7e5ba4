"""What a job does when it ends (issue 17): `notifications.on_complete` / `on_failure` fire
once each with the job summary (a webhook that is down changes nothing about the job), the
intent survives a stop, and `on_success: submit` chains follow-up jobs through the conductor,
bounded by `max_chain`."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import wait_for_job, wait_until

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.errors import SpecError
from podium.core.models import JobStatus
from podium.core.spec.loader import load_spec

pytestmark = pytest.mark.anyio


class Hook:
    """A local webhook receiver."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    try:
        yield receiver
    finally:
        receiver.close()


def down_url() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/nobody-home"


async def hooks_done(conductor: Conductor, job_id: str) -> None:
    async def cleared() -> bool:
        row = await conductor.store.get_job(job_id)
        return row is not None and not row.pending_hooks

    await wait_until(cleared, timeout=20)


async def test_on_failure_webhook_and_on_complete_command_fire_once(
    conductor: Conductor, hook: Hook, tmp_path: Path
) -> None:
    # One file per job and event (two jobs end at once): a second firing adds a line to it.
    logs = tmp_path / "events"
    logs.mkdir()
    record = f'f={logs}/"$PODIUM_JOB_ID.$PODIUM_EVENT"; cat >> "$f"; echo >> "$f"'
    notifications = {
        "on_complete": [{"type": "command", "command": record}],
        "on_failure": [
            {"type": "webhook", "url": hook.url},
            {"type": "command", "command": record},
        ],
    }
    failing = await conductor.submit_job(
        spec={
            "name": "fails",
            "retry": {"max_retries": 0},
            "notifications": notifications,
            "sheets": [{"prompt": "exit 3"}],
        }
    )
    passing = await conductor.submit_job(
        spec={
            "name": "passes",
            "notifications": {
                **notifications,
                "on_complete": [
                    {"type": "webhook", "url": down_url(), "timeout_seconds": 2},
                    {"type": "command", "command": record},
                    {"type": "desktop"},
                ],
            },
            "sheets": [{"prompt": "echo fine"}],
        }
    )
    for submitted in (failing, passing):
        await wait_for_job(conductor, submitted.job_id)
        await hooks_done(conductor, submitted.job_id)

    assert [b["event"] for b in hook.bodies] == ["job_failed"]
    (body,) = hook.bodies
    assert body["job"]["job_id"] == failing.job_id and body["job"]["status"] == "failed"
    assert body["job"]["failed_sheets"] == 1 and body["job"]["error"].startswith("sheet 1 failed")

    events = [
        json.loads(line)
        for path in sorted(logs.iterdir())
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    assert sorted((e["event"], e["job"]["job_id"]) for e in events) == sorted(
        [("job_failed", failing.job_id), ("job_completed", passing.job_id)]
    )
    # The webhook that was down did not touch the job.
    detail = await conductor.get_job(passing.job_id)
    assert detail.status is JobStatus.COMPLETED and detail.error is None


async def test_the_intent_survives_a_stop(
    make_config: Callable[..., PodiumConfig], tmp_path: Path
) -> None:
    started = tmp_path / "started"
    finished = tmp_path / "finished"
    release = tmp_path / "release"
    # The command waits (bounded) for the test to release it; the first conductor is
    # stopped while it waits, so the hook is not done and must run again at the next start.
    command = (
        f"echo x >> {started}; "
        f"for _ in $(seq 200); do [ -e {release} ] && break; sleep 0.05; done; "
        f"[ -e {release} ] && echo x >> {finished}"
    )
    spec = {
        "name": "durable-hook",
        "notifications": {"on_complete": [{"type": "command", "command": command}]},
        "sheets": [{"prompt": "echo done"}],
    }
    first = Conductor(make_config())
    await first.start()
    try:
        submitted = await first.submit_job(spec=spec)
        await wait_for_job(first, submitted.job_id)

        async def running() -> bool:
            return started.exists()

        await wait_until(running)
    finally:
        await first.stop()
    assert not finished.exists()
    release.touch()
    second = Conductor(make_config())
    await second.start()
    try:
        await hooks_done(second, submitted.job_id)
    finally:
        await second.stop()
    assert started.read_text() == "x\nx\n"
    assert finished.read_text() == "x\n"  # completed once


async def test_on_success_chains_through_the_conductor_up_to_max_chain(
    make_config: Callable[..., PodiumConfig], tmp_path: Path
) -> None:
    folder = tmp_path / "specs"
    folder.mkdir()
    spec = {
        "name": "evolve",
        "workspace": "ws",
        "on_success": {"submit": "evolve.yaml", "max_chain": 2},
        "sheets": [{"prompt": "echo {{ job_id }} >> runs.txt"}],
    }
    path = folder / "evolve.yaml"
    path.write_text(yaml.safe_dump(spec))
    conductor = Conductor(make_config(allowed_roots=[str(folder)]))
    await conductor.start()
    try:
        first = await conductor.submit_job(path=str(path))

        async def chain_done() -> bool:
            jobs, _ = await conductor.list_jobs(name="evolve")
            rows = [await conductor.store.get_job(j.job_id) for j in jobs]
            return (
                len(rows) == 3
                and all(r is not None and r.status is JobStatus.COMPLETED for r in rows)
                and all(r is not None and not r.pending_hooks for r in rows)
            )

        await wait_until(chain_done, timeout=30)
        jobs, _ = await conductor.list_jobs(name="evolve")
        rows = sorted(
            [r for j in jobs if (r := await conductor.store.get_job(j.job_id)) is not None],
            key=lambda r: r.chain_depth,
        )
    finally:
        await conductor.stop()
    assert [r.chain_depth for r in rows] == [0, 1, 2]
    detail = await conductor_detail(make_config, rows[2].job_id)
    assert (detail.chained_from, detail.chain_depth) == (rows[1].job_id, 2)
    assert rows[0].job_id == first.job_id and rows[0].chained_from is None
    assert [r.chained_from for r in rows[1:]] == [rows[0].job_id, rows[1].job_id]
    runs = (folder / "ws" / "runs.txt").read_text().split()
    assert runs == [r.job_id for r in rows]  # the chain stopped at max_chain: no fourth job


async def conductor_detail(make_config: Callable[..., PodiumConfig], job_id: str) -> Any:
    """The job detail, as `status` shows it, read by a conductor on the same home."""
    async with Conductor(make_config()) as conductor:
        return await conductor.get_job(job_id)


def test_hook_errors_name_the_field() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(
            data={
                "name": "bad",
                "notifications": {"on_failure": [{"type": "webhook", "url": "ftp://x"}]},
                "on_success": {"submit": "next.yaml", "max_chain": 0},
                "sheets": [{"prompt": "echo"}],
            }
        )
    paths = {e.path for e in caught.value.errors}
    assert {"notifications.on_failure.0.url", "on_success.max_chain"} <= paths


async def test_a_spec_run_from_its_own_folder_chains_the_follow_up_beside_it(
    conductor: Conductor, tmp_path: Path
) -> None:
    """`podium run ~/proj/first.yaml` (a folder outside the allowed roots, granted for that
    submit as the CLI does) chains `next.yaml` beside it, with the default workspace; a
    follow-up that fails validation is not submitted and leaves its parent completed."""
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "first.yaml").write_text(
        "name: first\non_success: {submit: next.yaml, max_chain: 4}\nsheets: [{prompt: echo one}]\n"
    )
    (folder / "next.yaml").write_text(
        "name: second\non_success: {submit: broken.yaml, max_chain: 4}\n"
        "sheets: [{prompt: echo two}]\n"
    )
    (folder / "broken.yaml").write_text("name: third\nsheets: [{prompt: echo 3, bogus: 1}]\n")
    first = await conductor.submit_job(path=str(folder / "first.yaml"), extra_roots=[folder])
    assert (await wait_for_job(conductor, first.job_id)).status is JobStatus.COMPLETED
    await hooks_done(conductor, first.job_id)

    async def second_done() -> bool:
        jobs, _ = await conductor.list_jobs(name="second")
        return len(jobs) == 1 and jobs[0].status is JobStatus.COMPLETED

    await wait_until(second_done, timeout=20)
    (second,) = (await conductor.list_jobs(name="second"))[0]
    await hooks_done(conductor, second.job_id)
    detail = await conductor.get_job(second.job_id)
    assert (detail.chained_from, detail.chain_depth) == (first.job_id, 1)
    assert (await conductor.list_jobs(name="third"))[0] == []
    assert detail.status is JobStatus.COMPLETED
