"""The dashboard in a real browser (issue 14): Debian's chromium, headless, driven by
Playwright against a real conductor (`podium start --detach`) in a temp home, logged in with
the one-time link `podium dashboard` prints. Screenshots go to tests/artifacts/."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from chromium import BROWSER_TEST_TIMEOUT, artifact, chromium
from dashboard_support import (
    RunningConductor,
    call,
    gated,
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
        # Set once; a reload would lose it. (Waits go through locators: a string predicate that
        # has to poll is eval, which the page's CSP refuses.)
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
        await page.locator("#sheet-log", has_text="work done").wait_for(timeout=WAIT_MS)
        assert await page.locator("#timeline rect.attempt").count() == 2
        await page.screenshot(path=str(artifact("dashboard-job-view.png")), full_page=True)


async def test_a_busy_job_keeps_its_view_moving(conductor: RunningConductor) -> None:
    """Sheets that change more often than the page's refresh delay: the view refreshed only
    after a quiet spell, so a busy job's DAG stood still until its last sheet was done."""
    busy = [{"name": f"b{i}", "prompt": "sleep 0.02"} for i in range(600)]
    spec = {
        "name": "busy",
        "sheets": [gated("hold"), *busy],
        "concurrency": {"max_parallel_sheets": 6},
    }
    async with dashboard(conductor) as page:
        job = await submit(conductor, spec)
        try:
            await page.evaluate(f"location.hash = '#/jobs/{job['job_id']}'")
            await page.wait_for_selector(sheet(201, "completed"), timeout=WAIT_MS)
            now = await status_of(conductor, job["job_id"])
            # The page caught up while sheets were still changing, not after they all had.
            assert now["completed_sheets"] < len(busy), now["completed_sheets"]
        finally:
            open(job["workspace"] + "/go", "w").close()


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


async def test_an_attempt_whose_log_was_cut_says_so_on_the_timeline(
    conductor: RunningConductor,
) -> None:
    """The attempt's bar carries `log_truncated` from the history, and its tooltip says the
    log was cut; a quiet attempt's says nothing of the kind."""
    flood = "head -c 11000000 /dev/zero | tr '\\0' x; echo"
    spec = {
        "name": "floods",
        "sheets": [{"name": "loud", "prompt": flood}, {"name": "quiet", "prompt": "echo hi"}],
    }
    job = await submit(conductor, spec)
    async with dashboard(conductor, f"#/jobs/{job['job_id']}") as page:
        await page.wait_for_selector('#job-status[data-status="completed"]', timeout=WAIT_MS)
        loud = page.locator('#timeline rect.attempt[data-sheet="1"]')
        quiet = page.locator('#timeline rect.attempt[data-sheet="2"]')
        await loud.and_(page.locator('[data-log-truncated="true"]')).wait_for(timeout=WAIT_MS)
        assert await quiet.get_attribute("data-log-truncated") == "false"
        assert "log cut at log_max_bytes" in (await loud.locator("title").text_content() or "")
        assert "log cut" not in (await quiet.locator("title").text_content() or "")


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


HOSTILE = "<script>window.__owned = 1</script> &amp; \"quoted\" 'single' <b>bold</b> ünï 🎉"


async def test_a_sheet_of_hundreds_opens_its_panel_in_view_with_its_text_escaped(
    conductor: RunningConductor,
) -> None:
    """Three hundred independent sheets are one column thousands of pixels tall: it scrolls in
    its box, and the clicked sheet's panel is shown where the user is looking. Error and log
    text with markup is shown as text."""
    sheets = [{"name": f"s{i}", "prompt": "true"} for i in range(1, 301)]
    sheets[249]["prompt"] = f"printf '%s\\n' '{HOSTILE}' >&2; exit 3"
    spec = {"name": "wide", "sheets": sheets, "on_failure": "continue"}
    job = await submit(conductor, spec)
    async with dashboard(conductor, f"#/jobs/{job['job_id']}") as page:
        await page.wait_for_selector('#job-status[data-status="failed"]', timeout=WAIT_MS)
        await page.click(sheet(250, "failed"))
        panel = page.locator("#sheet-panel")
        await panel.wait_for(timeout=WAIT_MS)
        await page.locator("#sheet-log", has_text="<b>bold</b>").wait_for(timeout=WAIT_MS)
        box = await panel.bounding_box()
        assert box is not None and 0 <= box["y"] < 860, f"the panel is off screen at {box}"
        assert await page.evaluate("window.__owned === undefined")
        assert await page.locator("main script, #sheet-panel b").count() == 0


async def test_a_second_gate_takes_a_decision_after_the_first(conductor: RunningConductor) -> None:
    spec = {
        "name": "two-gates",
        "sheets": [
            {"name": "legal", "instrument": "approval", "prompt": "Legal ok?"},
            {"name": "security", "instrument": "approval", "prompt": "Security ok?"},
        ],
    }
    job = await submit(conductor, spec)
    async with dashboard(conductor, f"#/jobs/{job['job_id']}") as page:
        for num in (1, 2):
            await page.wait_for_selector(
                f'#dag g.sheet[data-sheet="{num}"][data-waiting="approval"]', timeout=WAIT_MS
            )
        await page.click(sheet(1, "waiting"))
        await page.click("#btn-approve")
        await page.wait_for_selector(sheet(1, "completed"), timeout=WAIT_MS)
        await page.click(sheet(2, "waiting"))
        await page.click("#btn-approve", timeout=5_000)
        await page.wait_for_selector('#job-status[data-status="completed"]', timeout=WAIT_MS)


async def test_a_job_cleared_while_open_is_shown_as_gone_and_controls_are_off(
    conductor: RunningConductor,
) -> None:
    job = await submit(conductor, {"name": "doomed", "sheets": [{"name": "a", "prompt": "true"}]})
    job_id = job["job_id"]
    async with dashboard(conductor, f"#/jobs/{job_id}") as page:
        await page.wait_for_selector('#job-status[data-status="completed"]', timeout=WAIT_MS)
        assert await page.is_enabled("#btn-resume") is False  # completed: nothing to resume
        async with conductor.client() as client:
            assert (await call(client, "clear", {"job_ids": [job_id]}))["deleted"] == 1
        # The list's change event makes the page re-read the job it shows.
        await page.wait_for_selector("#view-job[data-stale]", timeout=WAIT_MS)
        assert "not found" in await page.inner_text("#job-error")
        for button in ("#btn-pause", "#btn-resume", "#btn-cancel"):
            assert await page.is_disabled(button)
        # Another job id, unknown or malformed, shows nothing of the job before it.
        await page.evaluate("location.hash = '#/jobs/%E0%A4%A'")
        await page.locator("#job-error", has_text="'%E0%A4%A' not found").wait_for(timeout=WAIT_MS)
        assert await page.inner_text("#job-title") == "%E0%A4%A"
        assert await page.locator("#dag g.sheet").count() == 0


async def test_more_pages_stay_open_when_the_list_changes(conductor: RunningConductor) -> None:
    async with conductor.client() as client:
        for i in range(55):
            await call(client, "submit_job", {"spec": {"name": f"page{i}", "sheets": [
                {"prompt": "true"}]}})  # fmt: skip
    async with dashboard(conductor) as page:
        await page.wait_for_selector("#more:not([hidden])", timeout=WAIT_MS)
        await page.click("#more")
        await page.locator("#jobs tbody tr").nth(54).wait_for(timeout=WAIT_MS)
        shown = await page.locator("#jobs tbody tr").count()
        late = await submit(conductor, {"name": "late", "sheets": [{"prompt": "true"}]})
        await page.wait_for_selector(f'tr[data-job="{late["job_id"]}"]', timeout=WAIT_MS)
        # As many rows as before (not back to the first page of 50), the new job on top.
        assert await page.locator("#jobs tbody tr").count() >= shown >= 55
        assert (
            await page.locator("#jobs tbody tr").first.get_attribute("data-job") == late["job_id"]
        )


async def test_a_stopped_conductor_is_said_to_be_gone_and_a_refused_stream_logged_out(
    tmp_path: Path,
) -> None:
    """The page retries a dropped stream, then says the conductor is not answering (a
    restarted one listens at a new address); a stream refused outright (a restarted conductor
    on a fixed port knows no session of the one before: 401) is said to be a logout."""
    own = start_conductor(tmp_path / "home")
    try:
        async with chromium() as browser:
            pages = []
            for _ in range(2):
                context = await browser.new_context()
                page = await context.new_page()
                await page.goto(own.login_url())
                await page.wait_for_selector('#conn[data-state="live"]', timeout=WAIT_MS)
                pages.append(page)
            refused, dropped = pages
            await refused.route(
                "**/podium/dashboard/events", lambda route: route.fulfill(status=401, body="{}")
            )
            stop_conductor(own)
            await refused.wait_for_selector('#conn[data-state="logged-out"]', timeout=WAIT_MS)
            assert "podium dashboard" in await refused.inner_text("#conn")
            await dropped.wait_for_selector('#conn[data-state="unreachable"]', timeout=WAIT_MS)
            assert "podium dashboard" in await dropped.inner_text("#conn")
    finally:
        stop_conductor(own)


async def test_a_chain_is_shown_both_ways_and_a_refused_follow_up_says_why(
    conductor: RunningConductor,
) -> None:
    folder = conductor.home / "workspaces" / "chain-specs"
    folder.mkdir(parents=True, exist_ok=True)
    # The first job runs until its gate file appears: the page is open before the follow-up
    # exists, and shows it as it comes.
    gate = "while [ ! -e {{ workspace }}/go ]; do sleep 0.05; done; echo one"
    (folder / "first.yaml").write_text(
        yaml.safe_dump(
            {"name": "first", "on_success": {"submit": "second.yaml"}, "sheets": [{"prompt": gate}]}
        )
    )
    (folder / "second.yaml").write_text("name: second\nsheets: [{prompt: echo two}]\n")
    (folder / "lonely.yaml").write_text(
        "name: lonely\non_success: {submit: not-there.yaml}\nsheets: [{prompt: echo alone}]\n"
    )
    async with conductor.client() as client:
        first = await call(client, "submit_job", {"path": str(folder / "first.yaml")})
        lonely = await call(client, "submit_job", {"path": str(folder / "lonely.yaml")})
    async with dashboard(conductor, f"#/jobs/{first['job_id']}") as page:
        await page.wait_for_selector(sheet(1, "running"), timeout=WAIT_MS)
        assert await page.locator("#job-chain > *").count() == 0
        open(first["workspace"] + "/go", "w").close()
        submitted = page.locator('#job-follow-up[data-status="submitted"] a')
        await submitted.wait_for(timeout=WAIT_MS)
        child_id = await submitted.get_attribute("data-job")
        assert child_id and child_id.startswith("first-next-")
        assert (await status_of(conductor, first["job_id"]))["follow_up"]["job_id"] == child_id
        await submitted.click()
        await page.locator("#job-title", has_text=child_id).wait_for(timeout=WAIT_MS)
        parent = page.locator("#job-chained-from a")
        await parent.wait_for(timeout=WAIT_MS)
        assert await parent.get_attribute("data-job") == first["job_id"]
        assert "link 1 of its chain" in await page.locator("#job-chained-from").inner_text()
        # A job that is no link of a chain shows none of it.
        await page.goto(conductor.base + f"/#/jobs/{lonely['job_id']}")
        refused = page.locator('#job-follow-up[data-status="refused"]')
        await refused.wait_for(timeout=WAIT_MS)
        assert "not-there.yaml" in await refused.inner_text()
        assert await page.locator("#job-chained-from").count() == 0
