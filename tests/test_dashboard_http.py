"""The dashboard's HTTP surface without a browser (issue 14): the same DNS-rebinding rules as
`/mcp`, the token needed for reading and for controls, a one-time login link that sets an
HttpOnly SameSite=Strict cookie, and CSRF protection of every POST. Real conductors run in
temp homes (`podium start --detach`, or a token-less `podium serve`), spoken to by raw HTTP."""

from __future__ import annotations

import getpass
import json
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import anyio
import httpx2
import pytest
from cli_zygote import run_podium
from dashboard_support import (
    PODIUM,
    RunningConductor,
    call,
    podium,
    podium_env,
    start_conductor,
    stop_conductor,
)

from podium.core.version import podium_version
from podium.server.dashboard import API, LOGIN_LINK_PATH

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def conductor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConductor]:
    running = start_conductor(tmp_path_factory.mktemp("dash-http") / "home")
    try:
        yield running
    finally:
        stop_conductor(running)


def http(conductor: RunningConductor) -> httpx2.Client:
    return httpx2.Client(base_url=conductor.base, follow_redirects=False, timeout=30)


def logged_in(conductor: RunningConductor) -> tuple[httpx2.Client, str]:
    """A client holding a browser session, and the page's CSRF token."""
    client = http(conductor)
    link = conductor.login_url()
    answer = client.get(link.removeprefix(conductor.base))
    assert answer.status_code == 303, answer.text
    page = client.get("/")
    assert page.status_code == 200
    match = re.search(r'name="podium-csrf" content="([^"]+)"', page.text)
    assert match, "the page carries its CSRF token"
    return client, match[1]


def test_a_wrong_host_header_is_refused(conductor: RunningConductor) -> None:
    evil = {"Host": "evil.example:80"}
    with http(conductor) as client:
        for method, path in [
            ("GET", "/"),
            ("GET", "/login?code=x"),
            ("GET", f"{API}/events"),
            ("POST", f"{API}/call"),
            ("POST", LOGIN_LINK_PATH),
        ]:
            answer = client.request(method, path, headers={**evil, **JSON}, content=b"{}")
            assert answer.status_code == 421, (method, path, answer.status_code)
        # The same request with the right Host gets past the Host check (to the token check).
        assert client.get("/").status_code == 401


def test_reading_and_controls_need_the_token(conductor: RunningConductor) -> None:
    with http(conductor) as client:
        page = client.get("/")
        assert page.status_code == 401
        assert "podium dashboard" in page.text
        assert "podium-csrf" not in page.text
        assert client.get(f"{API}/events").status_code == 401
        body = {"name": "show_jobs", "arguments": {}}
        assert client.post(f"{API}/call", json=body).status_code == 401
        history = {"uri": "podium://jobs/x/history"}
        assert client.post(f"{API}/read", json=history).status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert client.get("/", headers=wrong).status_code == 401
        assert client.post(LOGIN_LINK_PATH, json={}, headers=wrong).status_code == 401
        assert client.post(LOGIN_LINK_PATH, json={}).status_code == 401
        # The bearer token itself reads and controls (the CLI and scripts hold it).
        bearer = {"Authorization": f"Bearer {conductor.token}"}
        answer = client.post(f"{API}/call", json=body, headers=bearer)
        assert answer.status_code == 200, answer.text
        assert answer.json()["structuredContent"]["jobs"] == []


def test_the_login_link_works_once_and_sets_a_strict_httponly_cookie(
    conductor: RunningConductor,
) -> None:
    link = conductor.login_url()
    assert conductor.token is not None and conductor.token not in link
    assert link.startswith(conductor.base + "/login?code=")
    path = link.removeprefix(conductor.base)
    with http(conductor) as client:
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert conductor.token not in cookie
        assert client.get("/").status_code == 200
        with client.stream("GET", f"{API}/events") as events:
            assert events.status_code == 200
            assert events.headers["content-type"].startswith("text/event-stream")
            assert next(events.iter_text()).startswith("retry:")
    with http(conductor) as other:
        again = other.get(path)
        assert again.status_code == 401, "a login code is single-use"
        assert "used already or has expired" in again.text
        assert other.get("/").status_code == 401


def test_a_used_link_reopened_by_the_browser_it_logged_in_leads_to_the_page(
    conductor: RunningConductor,
) -> None:
    """The link again from the browser's history (or in a second tab) is no error for the
    browser it logged in; it grants that browser no new session and anyone else nothing."""
    link = conductor.login_url()
    path = link.removeprefix(conductor.base)
    with http(conductor) as client:
        assert client.get(path).status_code == 303
        again = client.get(path)
        assert again.status_code == 303 and again.headers["location"] == "/", again.text
        assert "set-cookie" not in again.headers
    with http(conductor) as other:
        assert other.get(path).status_code == 401


def test_the_page_has_a_strict_content_security_policy(conductor: RunningConductor) -> None:
    client, _ = logged_in(conductor)
    with closing(client):
        page = client.get("/")
    csp = page.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce and f'<script nonce="{nonce[1]}">' in page.text
    assert "frame-ancestors 'none'" in csp and "connect-src 'self'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"


def test_posts_need_the_csrf_header_not_just_the_cookie(conductor: RunningConductor) -> None:
    client, csrf = logged_in(conductor)
    body = {"name": "show_jobs", "arguments": {}}
    with closing(client):
        # The cookie alone (what a cross-site form would send) is not enough.
        answer = client.post(f"{API}/call", json=body)
        assert answer.status_code == 403 and "x-podium-csrf" in answer.json()["error"]
        wrong = client.post(f"{API}/call", json=body, headers={"X-Podium-CSRF": "guess"})
        assert wrong.status_code == 403
        # A form post cannot send JSON; a cross-site Origin is refused outright.
        form = client.post(
            f"{API}/call",
            content=b"name=pause",
            headers={"Content-Type": "application/x-www-form-urlencoded", "X-Podium-CSRF": csrf},
        )
        assert form.status_code == 400
        cross = client.post(
            f"{API}/call",
            json=body,
            headers={"X-Podium-CSRF": csrf, "Origin": "http://evil.example"},
        )
        assert cross.status_code == 403
        good = client.post(f"{API}/call", json=body, headers={"X-Podium-CSRF": csrf})
        assert good.status_code == 200, good.text


def test_only_the_dashboard_tools_and_arguments_are_callable(conductor: RunningConductor) -> None:
    client, csrf = logged_in(conductor)
    headers = {"X-Podium-CSRF": csrf}
    with closing(client):
        submit = client.post(
            f"{API}/call",
            json={"name": "submit_job", "arguments": {"spec_yaml": "name: x\nsheets: []"}},
            headers=headers,
        )
        assert submit.status_code == 404 and "not a dashboard tool" in submit.json()["error"]
        spec = client.post(
            f"{API}/call",
            json={"name": "resume", "arguments": {"job_id": "j", "path": "/etc/passwd"}},
            headers=headers,
        )
        assert spec.status_code == 400 and "path" in spec.json()["error"]
        missing = {"name": "show_job", "arguments": {"job_id": "nope"}}
        unknown = client.post(f"{API}/call", json=missing, headers=headers)
        assert unknown.status_code == 200
        assert unknown.json()["isError"] is True
        assert "nope" in unknown.json()["content"][0]["text"]
        read = client.post(
            f"{API}/read", json={"uri": "podium://conductor/status"}, headers=headers
        )
        assert read.status_code == 404


def test_podium_dashboard_prints_the_link_and_json(conductor: RunningConductor) -> None:
    done = podium(conductor.home, "dashboard", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["dashboard"] == conductor.base + "/"
    assert shown["one_time"] is True
    assert conductor.token is not None and conductor.token not in done.stdout


def test_podium_dashboard_open_hands_the_printed_link_to_the_browser(
    conductor: RunningConductor, tmp_path: Path
) -> None:
    """`--open` gives the browser ($BROWSER, as Python's webbrowser reads it) the same
    one-time link it prints, and that link logs the browser in."""
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}\n')
    browser.chmod(0o755)
    env = {**podium_env(conductor.home), "BROWSER": str(browser)}
    done = run_podium(["dashboard", "--open"], env, timeout=90)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip()
    assert opened.read_text() == printed
    assert printed.startswith(conductor.base + "/login?code=")
    with http(conductor) as client:
        assert client.get(printed, follow_redirects=True).status_code == 200
        assert client.get("/").status_code == 200  # the session cookie it set


def test_a_tokenless_conductor_serves_the_page_but_posts_still_need_csrf(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.Popen(
        [PODIUM, "serve", "--transport", "streamable-http", "--port", "0"],
        env=podium_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        info_path = home / "conductor.json"
        deadline = time.monotonic() + 60
        while not (info_path.exists() and json.loads(info_path.read_text()).get("url")):
            assert proc.poll() is None, "podium serve exited"
            assert time.monotonic() < deadline, "podium serve published no URL"
            time.sleep(0.05)
        url = json.loads(info_path.read_text())["url"]
        running = RunningConductor(home=home, url=url, token=None)
        assert running.login_url() == running.base + "/"
        with http(running) as client:
            page = client.get("/")
            assert page.status_code == 200
            csrf = re.search(r'name="podium-csrf" content="([^"]+)"', page.text)
            assert csrf
            body = {"name": "show_jobs", "arguments": {}}
            assert client.post(f"{API}/call", json=body).status_code == 403
            ok = client.post(f"{API}/call", json=body, headers={"X-Podium-CSRF": csrf[1]})
            assert ok.status_code == 200
            assert client.get("/", headers={"Host": "evil.example"}).status_code == 421
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.anyio
async def test_a_decision_from_the_dashboard_is_recorded_as_the_dashboards(
    conductor: RunningConductor,
) -> None:
    """Approve and Reject on the page go through the `approve` tool; the history says the
    dashboard decided (with the account the conductor runs as: only it can log in), not the
    name of the in-process client the page's calls travel over."""
    spec = {
        "name": "two-gates-web",
        "on_failure": "continue",
        "sheets": [
            {"name": "legal", "instrument": "approval", "prompt": "Legal ok?"},
            {"name": "security", "instrument": "approval", "prompt": "Security ok?"},
        ],
    }
    async with conductor.client() as mcp:
        job_id = (await call(mcp, "submit_job", {"spec": spec}))["job_id"]
        for _ in range(200):
            sheets = (await call(mcp, "status", {"job_id": job_id}))["sheets"]
            if all(s["waiting_reason"] == "approval" for s in sheets):
                break
            await anyio.sleep(0.05)
    client, csrf = logged_in(conductor)
    headers = {"X-Podium-CSRF": csrf}
    with closing(client):
        for sheet, decision in (("legal", "approve"), ("security", "reject")):
            arguments = {"job_id": job_id, "sheet": sheet, "decision": decision, "note": "web"}
            answer = client.post(
                f"{API}/call", json={"name": "approve", "arguments": arguments}, headers=headers
            )
            assert answer.status_code == 200 and answer.json()["isError"] is False, answer.text
        read = client.post(
            f"{API}/read", json={"uri": f"podium://jobs/{job_id}/history"}, headers=headers
        )
    entries = json.loads(read.json()["contents"][0]["text"])["entries"]
    decided = {e["sheet_num"]: (e["decision"], e["decided_by"], e["note"]) for e in entries}
    by = f"podium-dashboard ({getpass.getuser()}) {podium_version()}"
    assert decided == {1: ("approve", by, "web"), 2: ("reject", by, "web")}
