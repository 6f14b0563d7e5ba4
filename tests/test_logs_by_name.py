"""`logs` names its sheet by number or name, as `approve` does (a name that is all digits is a
number): through the MCP tool and `podium logs JOB --sheet X`, with a specific error for a
name the job does not have."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import wait_for_job
from mcp_harness import Harness, fails, finished_job, mcp, ok
from test_transports import podium_cli

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import JobStatus

pytestmark = pytest.mark.anyio
__all__ = ["mcp"]  # fixture used by name below

NAMED = {
    "name": "named",
    "sheets": [
        {"name": "fetch", "prompt": "echo fetched-rows"},
        {"name": "build.v2", "depends_on": ["fetch"], "prompt": "echo built-it"},
    ],
}


async def test_logs_tool_takes_a_sheet_name(mcp: Harness) -> None:
    job_id = (await finished_job(mcp, NAMED))["job_id"]
    by_name = await ok(mcp, "logs", {"job_id": job_id, "sheet": "build.v2"})
    assert by_name["sheet_num"] == 2 and "built-it" in by_name["text"]
    by_number = await ok(mcp, "logs", {"job_id": job_id, "sheet": 2})
    assert by_number["text"] == by_name["text"]
    digits = await ok(mcp, "logs", {"job_id": job_id, "sheet": "1"})
    assert digits["sheet_num"] == 1 and "fetched-rows" in digits["text"]
    paged = await ok(mcp, "logs", {"job_id": job_id, "sheet": "fetch", "offset": 0})
    assert "fetched-rows" in paged["text"]

    message = await fails(mcp, "logs", {"job_id": job_id, "sheet": "deploy"})
    assert message.startswith("sheet"), message
    assert "no sheet named 'deploy'" in message and "fetch, build.v2" in message
    assert "no sheet 9" in await fails(mcp, "logs", {"job_id": job_id, "sheet": "9"})
    assert "not found" in await fails(mcp, "logs", {"job_id": "nope", "sheet": "fetch"})


async def test_podium_logs_sheet_by_name(
    make_config: Callable[..., PodiumConfig], home: Path
) -> None:
    async with Conductor(make_config()) as conductor:
        job = await conductor.submit_job(spec=NAMED, job_id="named")
        assert (await wait_for_job(conductor, job.job_id)).status is JobStatus.COMPLETED

    # No conductor runs: the CLI reads the store through the same tool.
    by_name = podium_cli(home, "logs", "named", "--sheet", "build.v2")
    assert by_name.returncode == 0, by_name.stderr
    assert "built-it" in by_name.stdout and "fetched-rows" not in by_name.stdout
    by_number = podium_cli(home, "logs", "named", "--sheet", "1")
    assert by_number.returncode == 0 and "fetched-rows" in by_number.stdout

    # --follow pages the sheet by the number the name resolved to, and ends with the sheet.
    followed = podium_cli(home, "logs", "named", "--sheet", "build.v2", "--follow")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.count("built-it") == 1 and "fetched-rows" not in followed.stdout

    unknown = podium_cli(home, "logs", "named", "--sheet", "deploy")
    assert unknown.returncode == 2, (unknown.stdout, unknown.stderr)
    assert "--sheet: job 'named' has no sheet named 'deploy'" in unknown.stderr, unknown.stderr
    assert "fetch, build.v2" in unknown.stderr
    zero = podium_cli(home, "logs", "named", "--sheet", "0")
    assert zero.returncode == 2 and "--sheet" in zero.stderr, zero.stderr
    assert "Traceback" not in unknown.stderr + zero.stderr
