"""The job view as an MCP App (the `io.modelcontextprotocol/ui` extension of the SDK).

`show_job` and `show_jobs` (in `tools.py`) carry `_meta.ui.resourceUri` pointing at one
`ui://` page: the same self-contained page the browser dashboard serves at `/`, which inside a
host's iframe talks to the host over the Apps postMessage bridge instead of HTTP. Hosts that
do not render Apps still get the job detail or job list as structured content and text.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from mcp.server.apps import Apps

JOB_VIEW_URI = "ui://podium/job-view.html"
PAGE_FILE = "dashboard.html"


@cache
def page_html() -> str:
    """The vendored page (package data), read once per process."""
    return resources.files("podium.server").joinpath("static", PAGE_FILE).read_text()


def apps_extension() -> Apps:
    """The Apps extension with the job view resource. The tools bound to it are built with the
    other tools (compact schemas, one guard), so only the resource is registered here."""
    apps = Apps()
    apps.add_html_resource(
        JOB_VIEW_URI,
        page_html(),
        name="job-view",
        title="Podium job view",
        description="Live view of a job (sheet DAG, attempt timeline, logs, controls) or of "
        "the job list; rendered by hosts that support MCP Apps",
        prefers_border=True,
    )
    return apps
