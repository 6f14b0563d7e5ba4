"""The job view as an MCP App (issue 14): the `ui://` resource and the tools bound to it, the
text that hosts without Apps get, and the page itself rendered in headless chromium inside a
small stub host of our own that speaks the Apps postMessage protocol and forwards the app's
requests to a real MCP client of a real `PodiumServer`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from chromium import BROWSER_TEST_TIMEOUT, artifact, chromium
from dashboard_support import call, gated_job
from helpers import wait_for_job, wait_until
from mcp import Client
from mcp_types import TextContent, TextResourceContents

from podium.core.conductor import Conductor
from podium.server.app import PodiumServer
from podium.server.app_view import JOB_VIEW_URI

pytestmark = pytest.mark.anyio
APP_MIME = "text/html;profile=mcp-app"
APPS_EXTENSION = "io.modelcontextprotocol/ui"
WAIT_MS = 30_000

# A host page: it renders the view in a sandboxed iframe (scripts only, opaque origin, as hosts
# do), answers ui/initialize, then sends tool-input and tool-result; every tools/call and
# resources/read of the app goes to the Python side (window.mcpForward) and back.
STUB_HOST = """<!doctype html><html><body style="margin:0">
<iframe id="app" sandbox="allow-scripts" style="width:1200px;height:900px;border:0"></iframe>
<script>
const frame = document.getElementById("app");
let input = {}, result = {};
window.received = [];
const send = (m) => frame.contentWindow.postMessage(m, "*");
window.sendToApp = send;
window.startApp = (html, toolInput, toolResult) => {
  input = toolInput; result = toolResult; frame.srcdoc = html;
};
window.addEventListener("message", async (event) => {
  if (event.source !== frame.contentWindow) return;
  const m = event.data;
  window.received.push(m);
  if (m.method === "ui/initialize") {
    send({jsonrpc: "2.0", id: m.id, result: {protocolVersion: "2026-01-26",
      hostInfo: {name: "stub-host", version: "0"},
      hostCapabilities: {serverTools: {}, serverResources: {}},
      hostContext: {theme: "light", displayMode: "inline"}}});
  } else if (m.method === "ui/notifications/initialized") {
    send({jsonrpc: "2.0", method: "ui/notifications/tool-input", params: {arguments: input}});
    send({jsonrpc: "2.0", method: "ui/notifications/tool-result", params: result});
  } else if (m.method === "tools/call" || m.method === "resources/read") {
    try {
      send({jsonrpc: "2.0", id: m.id, result: await window.mcpForward(m.method, m.params)});
    } catch (e) {
      send({jsonrpc: "2.0", id: m.id, error: {code: -32603, message: String(e.message || e)}});
    }
  }
});
</script></body></html>"""


async def started_app(
    browser: Any, forward: Any, html: str, tool_input: dict[str, Any], result: dict[str, Any]
) -> Any:
    """A page of the stub host running the app `html`, its host calls answered by `forward`."""
    page = await browser.new_page()
    await page.expose_function("mcpForward", forward)
    await page.set_content(STUB_HOST)
    await page.evaluate(
        "([html, input, result]) => window.startApp(html, input, result)",
        [html, tool_input, result],
    )
    return page


@pytest.fixture
async def client(conductor: Conductor) -> AsyncIterator[Client]:
    server = PodiumServer(conductor)
    async with server.running(), Client(server.mcp) as c:
        yield c


@pytest.fixture(params=["auto", "legacy"])
async def any_client(request: pytest.FixtureRequest, conductor: Conductor) -> AsyncIterator[Client]:
    server = PodiumServer(conductor)
    async with server.running(), Client(server.mcp, mode=request.param) as c:
        yield c


def _wire(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


# ----- the resource and the tools, over MCP ------------------------------------------------


async def test_the_ui_resource_is_listed_and_read_as_an_mcp_app(any_client: Client) -> None:
    listed = {str(r.uri): r for r in (await any_client.list_resources()).resources}
    assert listed[JOB_VIEW_URI].mime_type == APP_MIME
    read = await any_client.read_resource(JOB_VIEW_URI)
    (content,) = read.contents
    assert isinstance(content, TextResourceContents)
    assert content.mime_type == APP_MIME
    assert content.text.lstrip().lower().startswith("<!doctype html>")
    # Self-contained: nothing is loaded from anywhere (a host's default CSP allows nothing).
    for outside in ('src="http', 'href="http', "@import", "src='http"):
        assert outside not in content.text


async def test_show_job_and_show_jobs_carry_the_ui_resource_uri(any_client: Client) -> None:
    tools = {t.name: _wire(t) for t in (await any_client.list_tools()).tools}
    for name in ("show_job", "show_jobs"):
        assert tools[name]["_meta"]["ui"]["resourceUri"] == JOB_VIEW_URI
        assert tools[name]["annotations"]["readOnlyHint"] is True
    assert tools["show_job"]["inputSchema"]["required"] == ["job_id"]
    assert set(tools["show_jobs"]["inputSchema"]["properties"]) == set(
        tools["list_jobs"]["inputSchema"]["properties"]
    )


async def test_the_server_advertises_the_apps_extension(conductor: Conductor) -> None:
    """Protocol 2026-07-28 carries `capabilities.extensions` (SEP-2133); 2025-11-25 has no
    such field, and its Apps hosts go by the tools' `_meta.ui` alone."""
    server = PodiumServer(conductor)
    async with server.running(), Client(server.mcp) as c:
        capabilities = c.server_capabilities
        assert capabilities.extensions is not None
        assert APPS_EXTENSION in capabilities.extensions


async def test_a_client_without_the_extension_gets_the_job_as_text(
    any_client: Client, conductor: Conductor, tmp_path: Path
) -> None:
    job = await call(any_client, "submit_job", {"spec": {"name": "plain", "sheets": [
        {"name": "one", "prompt": "echo one"},
        {"name": "two", "depends_on": ["one"], "prompt": "echo two"},
    ]}})  # fmt: skip
    await wait_for_job(conductor, job["job_id"])
    result = await any_client.call_tool("show_job", {"job_id": job["job_id"]})
    assert not result.is_error
    (block,) = result.content
    assert isinstance(block, TextContent)
    shown = json.loads(block.text)
    assert shown["job_id"] == job["job_id"] and shown["status"] == "completed"
    assert [s["sheet_num"] for s in shown["sheets"]] == [1, 2]
    assert result.structured_content == shown
    listed = await any_client.call_tool("show_jobs", {"status": "completed"})
    assert [j["job_id"] for j in json.loads(listed.content[0].text)["jobs"]] == [job["job_id"]]  # type: ignore[union-attr]
    missing = await any_client.call_tool("show_job", {"job_id": "nope"})
    assert missing.is_error and "nope" in missing.content[0].text  # type: ignore[union-attr]


# ----- the page in a stub host --------------------------------------------------------------


@pytest.mark.timeout(BROWSER_TEST_TIMEOUT)
async def test_the_app_shows_the_job_and_its_buttons_call_tools_through_the_host(
    client: Client, conductor: Conductor
) -> None:
    job = await call(client, "submit_job", {"spec": gated_job("in-chat")})
    job_id = job["job_id"]
    await wait_for_job(conductor, job_id, statuses=("running",))
    html = (await client.read_resource(JOB_VIEW_URI)).contents[0].text  # type: ignore[union-attr]
    shown = await client.call_tool("show_job", {"job_id": job_id})
    forwarded: list[tuple[str, dict[str, Any]]] = []

    async def forward(method: str, params: dict[str, Any]) -> dict[str, Any]:
        forwarded.append((method, params))
        if method == "tools/call":
            return _wire(await client.call_tool(params["name"], params.get("arguments") or {}))
        return _wire(await client.read_resource(params["uri"]))

    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1220, "height": 920})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.expose_function("mcpForward", forward)
        await page.set_content(STUB_HOST)
        await page.evaluate(
            "([html, input, result]) => window.startApp(html, input, result)",
            [html, {"job_id": job_id}, _wire(shown)],
        )
        app = page.frame_locator("#app")
        await app.locator('#dag g.sheet[data-sheet="1"][data-status="running"]').wait_for(
            timeout=WAIT_MS
        )
        assert job_id in await app.locator("#job-title").inner_text()
        assert await app.locator("#job-status").get_attribute("data-status") == "running"
        # History came through the host as resources/read.
        await app.locator('#timeline rect.attempt[data-sheet="1"]').wait_for(timeout=WAIT_MS)
        await page.screenshot(path=str(artifact("app-job-view.png")))

        await app.locator("#btn-pause").click()
        await app.locator('#job-status[data-status="paused"]').wait_for(timeout=WAIT_MS)
        assert ("tools/call", {"name": "pause", "arguments": {"job_id": job_id}}) in forwarded
        assert (await conductor.get_job(job_id)).status.value == "paused"

        await app.locator("#btn-resume").click()
        await app.locator(
            '#job-status[data-status="running"], #job-status[data-status="queued"]'
        ).first.wait_for(timeout=WAIT_MS)
        assert ("tools/call", {"name": "resume", "arguments": {"job_id": job_id}}) in forwarded

        # A sheet's log tail comes through the host too.
        await app.locator('#dag g.sheet[data-sheet="1"]').click()
        await app.locator("#sheet-panel:not([hidden])").wait_for(timeout=WAIT_MS)
        assert any(
            m == "tools/call" and p["name"] == "logs" and p["arguments"]["sheet"] == 1
            for m, p in forwarded
        )
        Path(job["workspace"], "go").touch()
        await app.locator('#job-status[data-status="completed"]').wait_for(timeout=WAIT_MS)
        # The app spoke the Apps protocol and nothing else: no HTTP behind the host's back.
        methods = {m.get("method") for m in await page.evaluate("window.received")}
        assert {"ui/initialize", "ui/notifications/initialized", "tools/call"} <= methods
        assert {"resources/read"} <= methods
        assert not errors, errors


@pytest.mark.timeout(BROWSER_TEST_TIMEOUT)
async def test_the_app_lists_jobs_and_opens_one(client: Client, conductor: Conductor) -> None:
    spec = {"name": "listed", "sheets": [{"prompt": "true"}]}
    job = await call(client, "submit_job", {"spec": spec})
    await wait_for_job(conductor, job["job_id"])
    html = (await client.read_resource(JOB_VIEW_URI)).contents[0].text  # type: ignore[union-attr]
    listed = await client.call_tool("show_jobs", {"status": ["completed"]})

    async def forward(method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "tools/call":
            return _wire(await client.call_tool(params["name"], params.get("arguments") or {}))
        return _wire(await client.read_resource(params["uri"]))

    async with chromium() as browser:
        page = await browser.new_page()
        await page.expose_function("mcpForward", forward)
        await page.set_content(STUB_HOST)
        await page.evaluate(
            "([html, input, result]) => window.startApp(html, input, result)",
            [html, {"status": ["completed"]}, _wire(listed)],
        )
        app = page.frame_locator("#app")
        row = app.locator(f'tr[data-job="{job["job_id"]}"]')
        await row.wait_for(timeout=WAIT_MS)
        assert await app.locator('#filters input[value="completed"]').is_checked()
        await row.click()
        await app.locator('#dag g.sheet[data-sheet="1"][data-status="completed"]').wait_for(
            timeout=WAIT_MS
        )


@pytest.mark.timeout(BROWSER_TEST_TIMEOUT)
async def test_the_app_approve_button_calls_approve_with_the_spec_arguments(
    client: Client, conductor: Conductor
) -> None:
    """A sheet waiting for approval shows the mark and the buttons; Approve sends SPEC §7's
    `approve(job_id, sheet, decision, note)` through the host. The job here is a tool result
    the stub host makes up (the engine's approval gate lands separately); the end-to-end
    approval is tests/test_dashboard_browser.py::test_approving_a_pending_approval_by_clicking."""
    html = (await client.read_resource(JOB_VIEW_URI)).contents[0].text  # type: ignore[union-attr]
    sheet = {
        "sheet_num": 1, "name": "ask", "status": "waiting", "attempts": 0, "depends_on": [],
        "instrument": "approval", "started_at": None, "completed_at": None,
        "duration_seconds": None, "last_error": None, "error_category": None,
        "waiting_reason": "approval", "waiting_until": None, "output_tail": None,
        "log_uri": None,
    }  # fmt: skip
    detail = {
        "job_id": "gate-1", "name": "gate", "status": "running", "total_sheets": 2,
        "completed_sheets": 0, "failed_sheets": 0, "submitted_at": "2026-01-01T00:00:00.000000Z",
        "started_at": None, "completed_at": None, "pause_reason": None, "error": None,
        "labels": [], "workspace": "/tmp/w", "priority": 5, "sheets_total_matching": 2,
        "sheets": [sheet, {**sheet, "sheet_num": 2, "name": "ship", "status": "waiting",
                           "depends_on": [], "instrument": "shell",
                           "waiting_reason": "rate_limit"}],
    }  # fmt: skip
    text = [{"type": "text", "text": json.dumps(detail)}]
    result = {"content": text, "structuredContent": detail}
    calls: list[dict[str, Any]] = []

    async def forward(method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "tools/call":
            calls.append(params)
            if params["name"] == "approve":
                return {"content": [{"type": "text", "text": "approved"}], "structuredContent": {}}
            if params["name"] == "show_job":
                # The made-up job, as the app re-reads it every APP_POLL_MS (the conductor has
                # no such job: the page would show it gone, its buttons off).
                return result
            return _wire(await client.call_tool(params["name"], params.get("arguments") or {}))
        return {"contents": []}

    async with chromium() as browser:
        page = await started_app(browser, forward, html, {"job_id": "gate-1"}, result)
        app = page.frame_locator("#app")
        mark = app.locator('#dag g.sheet[data-sheet="1"][data-waiting="approval"] .approval-mark')
        await mark.wait_for(timeout=WAIT_MS)
        # A sheet waiting for anything else gets the clock, not the approval mark.
        assert await app.locator('#dag g.sheet[data-sheet="2"] .approval-mark').count() == 0
        assert await app.locator('#dag g.sheet[data-sheet="2"] .clock').count() == 1
        assert await app.locator('#dag g.sheet[data-sheet="1"] .clock').count() == 0
        await app.locator('#dag g.sheet[data-sheet="2"]').click()
        assert await app.locator("#approval").is_hidden()
        await app.locator('#dag g.sheet[data-sheet="1"]').click()
        await app.locator("#approval:not([hidden])").wait_for(timeout=WAIT_MS)
        await page.screenshot(path=str(artifact("app-approval-pending.png")))
        await app.locator("#approval-note").fill("ship it")
        await app.locator("#btn-approve").click()
        expected = {"job_id": "gate-1", "sheet": 1, "decision": "approve", "note": "ship it"}

        async def approved() -> bool:
            return any(c["name"] == "approve" for c in calls)

        await wait_until(approved, timeout=30)
        assert {"name": "approve", "arguments": expected} in calls


@pytest.mark.timeout(BROWSER_TEST_TIMEOUT)
async def test_the_app_says_when_a_job_has_more_sheets_than_it_draws(client: Client) -> None:
    """show_job returns at most 1000 sheets: the view of a bigger job says it draws a part."""
    html = (await client.read_resource(JOB_VIEW_URI)).contents[0].text  # type: ignore[union-attr]
    sheet = {
        "sheet_num": 1, "name": "a", "status": "completed", "attempts": 1, "depends_on": [],
        "instrument": "shell", "started_at": None, "completed_at": None,
        "duration_seconds": None, "last_error": None, "error_category": None,
        "waiting_reason": None, "waiting_until": None, "output_tail": None, "log_uri": None,
    }  # fmt: skip
    detail = {
        "job_id": "huge-1", "name": "huge", "status": "completed", "total_sheets": 1500,
        "completed_sheets": 1500, "failed_sheets": 0, "submitted_at": "2026-01-01T00:00:00Z",
        "started_at": None, "completed_at": None, "pause_reason": None, "error": None,
        "labels": [], "workspace": "/tmp/w", "priority": 5, "sheets_total_matching": 1500,
        "sheets": [sheet, {**sheet, "sheet_num": 2, "name": "b"}],
    }  # fmt: skip
    result = {
        "content": [{"type": "text", "text": json.dumps(detail)}],
        "structuredContent": detail,
    }

    async def forward(method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "tools/call" and params["name"] == "show_job":
            return result
        return {"contents": []}

    async with chromium() as browser:
        page = await started_app(browser, forward, html, {"job_id": "huge-1"}, result)
        app = page.frame_locator("#app")
        await app.locator('#dag g.sheet[data-sheet="2"]').wait_for(timeout=WAIT_MS)
        assert "first 2 of 1500 sheets" in await app.locator("#job-progress").inner_text()
