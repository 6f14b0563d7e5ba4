"""`podium dashboard`: the URL of the home's dashboard, with a one-time login link."""

from __future__ import annotations

import webbrowser

import click
import httpx2

from podium.core.errors import PodiumError
from podium.core.home import ConductorInfo
from podium.server.cli_base import Context, emit_json, err, pass_ctx, run_async, say, started_note


def _base_url(info: ConductorInfo) -> str:
    url = info.url or ""
    return url[: -len("/mcp")] if url.endswith("/mcp") else url


async def login_url(info: ConductorInfo) -> str:
    """The dashboard's URL; with a token, a one-time login link asked for with the token (the
    token itself never goes into a URL)."""
    from podium.server.dashboard import LOGIN_LINK_PATH

    base = _base_url(info)
    if not info.token:
        return base + "/"
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.post(
            base + LOGIN_LINK_PATH,
            json={},
            headers={"Authorization": f"Bearer {info.token}"},
        )
    if response.status_code != 200:
        raise PodiumError(
            f"the conductor refused a dashboard login link (HTTP {response.status_code}): "
            f"{response.text}"
        )
    path: str = response.json()["path"]
    return base + path


@click.command()
@click.option("--open", "open_browser", is_flag=True, help="Open the link in a web browser.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@pass_ctx
@run_async
async def dashboard(ctx: Context, open_browser: bool, as_json: bool) -> int:
    """Print the URL of the live dashboard (job list, sheet DAG, attempt timeline, logs,
    controls), starting the conductor when none runs. The link logs one browser in, once,
    within two minutes; run the command again for another browser."""
    from podium.server.daemon import ensure_conductor

    config = ctx.config()
    info, started = await ensure_conductor(config)
    started_note(config, started, info.pid)
    url = await login_url(info)
    if as_json:
        emit_json({"url": url, "dashboard": _base_url(info) + "/", "one_time": bool(info.token)})
    else:
        say(url)
        if info.token:
            err.print(
                "one-time login link: it works once, within two minutes, and sets a session "
                "cookie in that browser",
                markup=False,
            )
    if open_browser and not webbrowser.open(url):
        err.print("podium: no web browser could be opened; open the link yourself", markup=False)
    return 0
