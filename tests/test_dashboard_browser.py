"""The dashboard in a real browser (issue 14): Debian's chromium, headless, driven by
Playwright against a real conductor (`podium start --detach`) in a temp home, logged in with
the one-time link `podium dashboard` prints. Screenshots go to tests/artifacts/."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
from chromium import BROWSER_TEST_TIMEOUT, artifact, chromium
from dashboard_support import (
    RunningConductor,
    call,
    gated_job,
    start_conductor,
    stop_conductor,
    thirty_sheets,
)

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(BROWSER_TEST_TIMEOUT)]
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def conductor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConductor]:
    running = start_conductor(tmp_path_factory.mktemp("dash-browser") / "home")
    try:
        yield running
    finally:
        stop_conductor(running)


@asynccontextmanager
async def dashboard(conductor: RunningConductor, fragment: str = "") -> AsyncIterator[Page]:
    """A logged-in dashboard page; `fragment` (e.g. #/jobs/ID) is opened after the login."""
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 860})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(conductor.login_url())
        assert page.url == conductor.base + "/", "the login link lands on the dashboard"
        if fragment:
            await page.goto(conductor.base + "/" + fragment)
        await page.wait_for_selector('#conn[data-state="live"]', timeout=WAIT_MS)
        # Set once; a reload would lose it.
        await page.evaluate("window.__sameDocument = true")
        yield page
        assert await page.evaluate("window.__sameDocument === true"), "the page reloaded"
        assert not errors, errors


async def test_a_browser_without_the_login_link_is_refused(conductor: RunningConductor) -> None:
    link = conductor.login_url()
    async with chromium() as browser:
        first = await browser.new_page()
        assert (await first.goto(link)) is not None
        assert await first.locator("#view-list").count() == 1
        stranger = await browser.new_context()
        page = await stranger.new_page()
        answer = await page.goto(conductor.base + "/")
        assert answer is not None and answer.status == 401
        assert "podium dashboard" in await page.inner_text("body")
        reused = await page.goto(link)
        assert reused is not None and reused.status == 401, "the link was used already"
        events = await page.goto(conductor.base + "/podium/dashboard/events")
        assert events is not None and events.status == 401


async def submit(conductor: RunningConductor, spec: dict[str, Any]) -> dict[str, Any]:
    async with conductor.client() as client:
        return await call(client, "submit_job", {"spec": spec})


async def status_of(conductor: RunningConductor, job_id: str) -> dict[str, Any]:
    async with conductor.client() as client:
        return await call(client, "status", {"job_id": job_id})


def sheet(num: int, status: str) -> str:
    return f'#dag g.sheet[data-sheet="{num}"][data-status="{status}"]'


async def test_a_running_jobs_dag_turns_completed_without_reload(
    conductor: RunningConductor,
) -> None:
    job = await submit(conductor, gated_job("live"))
    async with dashboard(conductor) as page:
        await page.click(f'tr[data-job="{job["job_id"]}"]', timeout=WAIT_MS)
        await page.wait_for_selector(sheet(1, "running"), timeout=WAIT_MS)
        assert await page.locator(sheet(2, "pending")).count() == 1
        await page.click(sheet(1, "running"))
        await page.wait_for_selector("#sheet-panel:not([hidden])")
        open(job["workspace"] + "/go", "w").close()
        await page.wait_for_selector(sheet(1, "completed"), timeout=WAIT_MS)
        await page.wait_for_selector(sheet(2, "completed"), timeout=WAIT_MS)
        await page.wait_for_selector('#job-status[data-status="completed"]', timeout=WAIT_MS)
        # The selected sheet's log tail followed the change too.
        await page.wait_for_function(
            "document.getElementById('sheet-log').textContent.includes('work done')",
            timeout=WAIT_MS,
        )
        assert await page.locator("#timeline rect.attempt").count() == 2
        await page.screenshot(path=str(artifact("dashboard-job-view.png")), full_page=True)


async def test_pause_and_resume_by_clicking(conductor: RunningConductor) -> None:
    job = await submit(conductor, gated_job("clicks"))
    job_id = job["job_id"]
    async with dashboard(conductor, f"#/jobs/{job_id}") as page:
        await page.wait_for_selector(sheet(1, "running"), timeout=WAIT_MS)
        await page.click("#btn-pause")
        await page.wait_for_selector('#job-status[data-status="paused"]', timeout=WAIT_MS)
        paused = await status_of(conductor, job_id)
        assert (paused["status"], paused["pause_reason"]) == ("paused", "user")
        assert await page.is_disabled("#btn-pause") and await page.is_enabled("#btn-resume")
        await page.click("#btn-resume")
        await page.wait_for_selector(
            '#job-status[data-status="running"], #job-status[data-status="queued"]',
            timeout=WAIT_MS,
        )
        assert (await status_of(conductor, job_id))["status"] in ("running", "queued")
        open(job["workspace"] + "/go", "w").close()
        await page.wait_for_selector('#job-status[data-status="completed"]', timeout=WAIT_MS)


async def test_the_job_list_filters(conductor: RunningConductor) -> None:
    held = await submit(conductor, {**gated_job("filtered"), "labels": ["nightly"]})
    done = await submit(conductor, {"name": "quick", "sheets": [{"prompt": "true"}]})
    async with conductor.client() as client:
        await call(client, "status", {"job_id": done["job_id"], "wait_seconds": 20})
    async with dashboard(conductor) as page:
        await page.wait_for_selector(f'tr[data-job="{done["job_id"]}"]', timeout=WAIT_MS)
        await page.fill('#filters input[name="label"]', "nightly")
        await page.dispatch_event("#filters", "change")
        await page.wait_for_selector(f'tr[data-job="{done["job_id"]}"]', state="detached")
        assert await page.locator("tbody tr").count() == 1
        await page.fill('#filters input[name="label"]', "")
        await page.check('#filters input[value="completed"]')
        await page.wait_for_selector(f'tr[data-job="{held["job_id"]}"]', state="detached")
        assert await page.locator(f'tr[data-job="{done["job_id"]}"]').count() == 1
    open(held["workspace"] + "/go", "w").close()


async def test_a_thirty_sheet_dag_in_layers_with_retries_on_the_timeline(
    conductor: RunningConductor,
) -> None:
    job = await submit(conductor, thirty_sheets())
    async with dashboard(conductor, f"#/jobs/{job['job_id']}") as page:
        await page.wait_for_selector(sheet(15, "running"), timeout=WAIT_MS)
        await page.wait_for_selector(sheet(7, "failed"), timeout=WAIT_MS)
        await page.wait_for_selector(sheet(9, "completed"), timeout=WAIT_MS)
        await page.wait_for_selector(sheet(11, "skipped"), timeout=WAIT_MS)
        assert await page.locator("#dag g.sheet").count() == 30
        # Layers by dependency depth: six columns of five, each sheet right of its parents.
        columns = await page.eval_on_selector_all(
            "#dag g.sheet",
            "nodes => nodes.map(n => [Number(n.dataset.sheet), "
            "Number(n.getAttribute('transform').match(/translate\\(([0-9.]+)/)[1])])",
        )
        x_of = dict(columns)
        assert len(set(x_of.values())) == 6
        for num in range(1, 31):
            assert x_of[num] == x_of[(num - 1) % 5 + 1] + ((num - 1) // 5) * (x_of[6] - x_of[1])
        assert await page.locator("#dag path.edge").count() == 50
        # s9 failed once, then passed: two attempts in its timeline row.
        await page.wait_for_selector(
            '#timeline rect.attempt[data-sheet="9"][data-outcome="completed"]', timeout=WAIT_MS
        )
        assert await page.locator('#timeline rect.attempt[data-sheet="9"]').count() == 2
        await page.screenshot(path=str(artifact("dashboard-dag-30-sheets.png")), full_page=True)
        open(job["workspace"] + "/go", "w").close()
        await page.wait_for_selector('#job-status[data-status="failed"]', timeout=WAIT_MS)


async def test_approving_a_pending_approval_by_clicking(conductor: RunningConductor) -> None:
    async with conductor.client() as client:
        tools = {t.name for t in (await client.list_tools()).tools}
    assert "approve" in tools
    spec = {
        "name": "gate",
        "sheets": [
            {"name": "ask", "instrument": "approval", "prompt": "Ship it?"},
            {"name": "ship", "depends_on": ["ask"], "prompt": "echo shipped"},
        ],
    }
    job = await submit(conductor, spec)
    async with dashboard(conductor, f"#/jobs/{job['job_id']}") as page:
        await page.wait_for_selector(
            '#dag g.sheet[data-sheet="1"][data-waiting="approval"] .approval-mark', timeout=WAIT_MS
        )
        await page.click(sheet(1, "waiting"))
        await page.fill("#approval-note", "looks good")
        await page.click("#btn-approve")
        await page.wait_for_selector(sheet(1, "completed"), timeout=WAIT_MS)
        await page.wait_for_selector('#job-status[data-status="completed"]', timeout=WAIT_MS)
