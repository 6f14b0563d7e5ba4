"""A person may name a job by its spec name where a job id goes, when exactly one job has
that name; several are refused with the candidates; an id always wins over a name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_conductor import conductor_client
from test_transports import call, make_home, podium_cli

pytestmark = pytest.mark.anyio


def _spec(name: str) -> dict[str, object]:
    return {"name": name, "sheets": [{"name": "only", "prompt": f"echo ran-{name}"}]}


async def test_a_unique_spec_name_stands_for_its_job_and_several_are_refused(
    tmp_path: Path,
) -> None:
    home = make_home(tmp_path)
    assert podium_cli(home, "start", "--detach").returncode == 0
    try:
        async with conductor_client(home) as client:
            await call(client, "submit_job", {"spec": _spec("solo"), "job_id": "solo-1"})
            for job_id in ("twice-a", "twice-b"):
                await call(client, "submit_job", {"spec": _spec("twice"), "job_id": job_id})
            # A job whose id is another job's spec name: the id is taken as an id.
            await call(
                client, "submit_job", {"spec": _spec("other"), "job_id": "solo", "start": False}
            )
            for job_id in ("solo-1", "twice-a", "twice-b"):
                detail = await call(client, "status", {"job_id": job_id, "wait_seconds": 20})
                while detail["status"] != "completed":
                    detail = await call(client, "status", {"job_id": job_id, "wait_seconds": 20})

        by_name = podium_cli(home, "status", "twice", "--json")
        assert by_name.returncode == 2
        assert "several jobs are named 'twice'" in by_name.stderr, by_name.stderr
        assert "twice-a" in by_name.stderr and "twice-b" in by_name.stderr
        assert by_name.stderr.startswith("podium: JOB:"), by_name.stderr

        shadowed = json.loads(podium_cli(home, "status", "solo", "--json").stdout)
        assert shadowed["job_id"] == "solo" and shadowed["name"] == "other"

        unique = podium_cli(home, "logs", "twice-a", "--sheet", "only")
        assert unique.returncode == 0 and "ran-twice" in unique.stdout

        named = json.loads(podium_cli(home, "status", "other", "--json").stdout)
        assert named["job_id"] == "solo"
        cancelled = podium_cli(home, "cancel", "other", "--json")
        assert cancelled.returncode == 0, cancelled.stderr
        assert json.loads(cancelled.stdout)["job_id"] == "solo"

        unknown = podium_cli(home, "diagnose", "nobody")
        assert unknown.returncode == 2
        assert "JOB: job 'nobody' not found" in unknown.stderr, unknown.stderr
    finally:
        assert podium_cli(home, "stop", "--force").returncode == 0
    # With the conductor stopped, reads go to the store and names still resolve.
    cold = podium_cli(home, "logs", "other")
    assert cold.returncode == 0, cold.stderr
