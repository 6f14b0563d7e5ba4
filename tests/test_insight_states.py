"""`diagnose` and `estimate` beyond the failing-sheet case (issue 18's Build): a rate limit
that holds a job is named with the tool that lifts it, and the cost instruments report in
earlier runs becomes the expected cost."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from helpers import wait_for_job, wait_until

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import JobStatus, SheetStatus, WaitingReason

pytestmark = pytest.mark.anyio

# A CLI that prints a JSON result with the cost of the call, or a long rate limit.
FAKE_CLI = """#!{python}
import json, sys
prompt = sys.argv[1]
if prompt.startswith("limited"):
    print("Error: 429 rate limit exceeded, retry after 900 seconds", file=sys.stderr)
    sys.exit(1)
cost = float(prompt.split(":", 1)[1])
print(json.dumps({{"result": "ok", "total_cost_usd": cost}}))
"""


def install_metered(home: Path, tmp_path: Path, *, counts_cost: bool = True) -> None:
    """The fake CLI as instrument `metered` of `home` (reporting its cost, or not)."""
    cli = tmp_path / "metered-cli"
    cli.write_text(FAKE_CLI.format(python=sys.executable))
    cli.chmod(cli.stat().st_mode | stat.S_IXUSR)
    (home / "instruments").mkdir(exist_ok=True)
    usage = "usage: {cost_usd_path: total_cost_usd}\n" if counts_cost else ""
    (home / "instruments" / "metered.yaml").write_text(
        f"""
name: metered
executable: {cli}
args: ["{{prompt}}"]
output: {{format: json, result_path: result}}
{usage}patterns:
  rate_limit:
    - regex: "rate limit.*retry after (?P<secs>[0-9]+) seconds"
      retry_after_group: secs
"""
    )


@pytest.fixture
async def insight_conductor(
    make_config: Callable[..., PodiumConfig], home: Path, tmp_path: Path
) -> AsyncIterator[Conductor]:
    install_metered(home, tmp_path)
    async with Conductor(make_config(max_concurrent_sheets=4)) as conductor:
        yield conductor


async def test_diagnose_names_the_rate_limit_that_holds_a_job(
    insight_conductor: Conductor,
) -> None:
    c = insight_conductor
    job = await c.submit_job(
        spec={"name": "held", "instrument": "metered", "sheets": [{"prompt": "limited"}]}
    )

    async def held() -> bool:
        return (await c.get_job(job.job_id)).sheets[0].status is SheetStatus.WAITING

    await wait_until(held, timeout=20)
    result = await c.diagnose(job.job_id)
    assert [r.instrument for r in result.rate_limits] == ["metered"]
    [wait] = result.waiting
    assert wait.reason is WaitingReason.RATE_LIMIT and wait.until is not None
    assert "rate limit" in result.verdict or any("rate limit" in s.cause for s in result.failing)
    lift = [s for s in result.next_steps if s.tool == "clear_rate_limits"]
    assert any(
        s.arguments == {"instrument": "metered"}
        and s.cli == "podium clear --rate-limits --instrument metered"
        for s in lift
    ), lift
    await c.cancel_job(job.job_id)


async def test_estimate_expects_the_cost_earlier_runs_reported(
    insight_conductor: Conductor,
) -> None:
    c = insight_conductor

    def spec() -> dict[str, object]:
        return {
            "name": "metered-job",
            "instrument": "metered",
            "sheets": [{"name": "a", "prompt": "cost:0.25"}, {"name": "b", "prompt": "cost:0.5"}],
        }

    fresh = await c.estimate(spec=spec())
    assert fresh.expected_cost_usd is None
    for _ in range(3):
        submitted = await c.submit_job(spec=spec())
        done = await wait_for_job(c, submitted.job_id, timeout=30)
        assert done.status is JobStatus.COMPLETED
    guess = await c.estimate(spec=spec())
    assert guess.expected_cost_usd == pytest.approx(0.75)
    by_name = {s.name: s.expected_cost_usd for s in guess.sheets}
    assert by_name == {"a": pytest.approx(0.25), "b": pytest.approx(0.5)}
    assert json.loads(guess.model_dump_json())["expected_cost_usd"] == pytest.approx(0.75)


async def test_diagnose_says_a_pending_sheet_waits_behind_another_jobs_hold(
    insight_conductor: Conductor,
) -> None:
    """A sheet whose instrument another job's rate limit holds stays `pending` (it never
    ran, so it has no wait of its own): diagnose must still say what it waits for and how
    to lift it; a job on other instruments is not told about that hold."""
    c = insight_conductor
    first = await c.submit_job(
        spec={"name": "hits-limit", "instrument": "metered", "sheets": [{"prompt": "limited"}]}
    )

    async def held() -> bool:
        return bool((await c.status()).rate_limits)

    await wait_until(held, timeout=20)
    behind = await c.submit_job(
        spec={"name": "behind", "instrument": "metered", "sheets": [{"prompt": "cost:0.1"}]}
    )
    result = await c.diagnose(behind.job_id)
    [wait] = result.waiting
    assert wait.sheet_num == 1 and wait.reason is WaitingReason.RATE_LIMIT
    assert wait.until == (await c.status()).rate_limits[0].until
    assert "rate_limit" in result.verdict, result.verdict
    assert any(
        s.tool == "clear_rate_limits" and s.arguments == {"instrument": "metered"}
        for s in result.next_steps
    ), result.next_steps
    other = await c.submit_job(spec={"name": "elsewhere", "sheets": [{"prompt": "sleep 30"}]})
    unrelated = await c.diagnose(other.job_id)
    assert unrelated.rate_limits == [] and unrelated.waiting == []
    for job in (first, behind, other):
        await c.cancel_job(job.job_id)
