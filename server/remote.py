"""How the CLI talks to Podium: an MCP client over HTTP to the home's conductor, calling the
SPEC §7 tools; or, for pure reads when no conductor runs, the same tools in memory over a
read-only view of the store (never for writes). Both answer `call(tool, arguments)` with the
tool's structured output as JSON."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import Implementation, TextContent

from podium.core.config import PodiumConfig
from podium.core.errors import FieldError, PodiumError, SpecError, job_not_found, quoted
from podium.core.home import ConductorInfo
from podium.core.version import podium_version
from podium.server.cli_routes import SUBMIT_PATH
from podium.server.daemon import (
    NotAttachableError,
    TokenRefusedError,
    ensure_conductor,
    find_conductor,
    refuse_another_store,
)

# Tool and argument names in conductor messages, as a person types them at the CLI.
CLI_WORDS = {
    r"\blist_jobs\b": "podium list",
    r"\bsubmit_job\b": "podium run",
    r"\bvalidate_spec\b": "podium validate",
    r"\bclear_rate_limits\b": "podium clear --rate-limits",
    r"at least one of job_ids, statuses, older_than_hours, or all=true": (
        "at least one of JOB..., --status, --older-than-hours, or --all"
    ),
    r"^job_id:": "JOB:",
    r"^job_ids:": "JOB:",
    r"^statuses:": "--status:",
    r"^older_than_hours:": "--older-than-hours:",
    r"^sheet:": "--sheet:",
    r"^attempt:": "--attempt:",
    r"\ball=true\b": "--all",
}


def cli_words(text: str) -> str:
    for pattern, words in CLI_WORDS.items():
        text = re.sub(pattern, words, text, flags=re.MULTILINE)
    return text


class Caller(Protocol):
    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]: ...


# A spec name (SPEC §4), which a person often types where a job id goes.
_SPEC_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_MAX_SAME_NAME_SHOWN = 5


class JobNames:
    """Lets a person name a job by its spec name where the name is unique: a tool that
    finds no job by that id is asked again with the id of the one job so named. Ids are
    tried first, so a name never shadows an id; the answers are remembered for the session
    (a `--follow` asks many times)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._ids: dict[str, str] = {}

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        job = arguments.get("job_id")
        if not isinstance(job, str):
            return await _call_tool(self._client, tool, arguments)
        if job in self._ids:
            return await _call_tool(self._client, tool, {**arguments, "job_id": self._ids[job]})
        try:
            return await _call_tool(self._client, tool, arguments)
        except PodiumError as exc:
            if str(exc) != str(job_not_found(job)) or not _SPEC_NAME.fullmatch(job):
                raise
            self._ids[job] = await self._by_name(job, exc)
        return await _call_tool(self._client, tool, {**arguments, "job_id": self._ids[job]})

    async def _by_name(self, name: str, not_found: PodiumError) -> str:
        listed = await _call_tool(
            self._client, "list_jobs", {"name": name, "limit": _MAX_SAME_NAME_SHOWN + 1}
        )
        jobs: list[dict[str, Any]] = listed["jobs"]
        if not jobs:
            raise not_found
        if len(jobs) == 1:
            return str(jobs[0]["job_id"])
        shown = ", ".join(f"{j['job_id']} ({j['status']})" for j in jobs[:_MAX_SAME_NAME_SHOWN])
        more = " and more" if len(jobs) > _MAX_SAME_NAME_SHOWN else ""
        raise PodiumError(
            f"job_id: several jobs are named {quoted(name)}, newest first: {shown}{more}; "
            "give the job id"
        )


async def _call_tool(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    try:
        result = await client.call_tool(tool, arguments)
    except MCPError as exc:
        raise PodiumError(f"the conductor did not answer {tool}: {exc}") from exc
    if result.is_error:
        text = "\n".join(b.text for b in result.content if isinstance(b, TextContent))
        raise PodiumError(text or f"{tool} failed")
    if not isinstance(result.structured_content, dict):
        raise PodiumError(f"the conductor's answer to {tool} had no structured content")
    return result.structured_content


class Remote:
    """The CLI's MCP client session with a running conductor."""

    def __init__(self, client: Client, info: ConductorInfo, http: httpx2.AsyncClient) -> None:
        self.client = client
        self.info = info
        self._http = http
        self._jobs = JobNames(client)

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return await self._jobs.call(tool, arguments)

    async def submit_path(self, path: Path, job_id: str | None) -> dict[str, Any]:
        """Submit a spec file with its folder as a workspace root (the CLI-only route)."""
        url = self.info.url or ""
        base = url[: -len("/mcp")] if url.endswith("/mcp") else url
        if not self.info.token:
            # A conductor without a token offers no CLI route: the spec must lie in a root.
            return await self.call("submit_job", {"path": str(path), "job_id": job_id})
        response = await self._http.post(
            base + SUBMIT_PATH, json={"path": str(path), "job_id": job_id}
        )
        body: dict[str, Any] = response.json()
        if response.status_code == 422:
            errors = [FieldError(*_split(e)) for e in body.get("errors", [])]
            raise SpecError(errors)
        if response.status_code != 200:
            raise PodiumError(str(body.get("error", response.text)))
        return body


def _split(line: str) -> tuple[str, str]:
    path, _, message = line.partition(": ")
    return ("" if path == "<root>" else path), message


@asynccontextmanager
async def connect(info: ConductorInfo) -> AsyncIterator[Remote]:
    assert info.url is not None
    headers = {"Authorization": f"Bearer {info.token}"} if info.token else None
    http = create_mcp_http_client(headers=headers)
    refused = False

    async def note_refusal(response: httpx2.Response) -> None:
        nonlocal refused
        refused = refused or response.status_code == 401

    # The SDK reports a 401 as "Server returned an error response": the hook keeps the why.
    http.event_hooks["response"].append(note_refusal)
    transport = streamable_http_client(info.url, http_client=http)
    try:
        async with http, Client(transport, client_info=cli_client_info()) as client:
            yield Remote(client, info, http)
    except Exception as exc:
        if refused and not isinstance(exc, TokenRefusedError):
            raise TokenRefusedError(info) from exc
        raise


def cli_client_info(program: str = "podium-cli") -> Implementation:
    """How the CLI (or the dashboard) names itself to the conductor: decisions it makes
    (`podium approve`, the page's Approve) are recorded with this name, which says which
    person's account made them."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown user"
    return Implementation(name=f"{program} ({user})", version=podium_version())


class LocalReader:
    """Pure reads while no conductor runs: the same MCP tools, in memory, over a read-only
    view of the store (no lock, no dispatch). Tools that are not read-only are refused."""

    def __init__(
        self, client: Client, read_only: frozenset[str], embedded_owner: ConductorInfo | None
    ) -> None:
        self._read_only = read_only
        self._jobs = JobNames(client)
        # The `podium serve --embedded` engine that owns the home, if one does.
        self.embedded_owner = embedded_owner

    def note(self, home: Path) -> str:
        """Where a read came from, for a person (stderr)."""
        if self.embedded_owner is not None:
            return (
                f"read from the store of the engine embedded in pid {self.embedded_owner.pid}, "
                f"which owns {home}"
            )
        return f"no conductor is running on {home}; read from the store"

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        if tool not in self._read_only:
            raise PodiumError(f"{tool} needs a running conductor (podium start --detach)")
        return await self._jobs.call(tool, arguments)


@asynccontextmanager
async def reader(config: PodiumConfig) -> AsyncIterator[tuple[Caller, ConductorInfo | None]]:
    """The running conductor for reads, else the store as it is."""
    embedded: ConductorInfo | None = None
    try:
        info = find_conductor(config)
    except NotAttachableError as exc:
        # An embedded engine owns the home: its store can still be read, when it is the one
        # this command is configured for (it recorded its store where it records owning it).
        refuse_another_store(config, exc.info)
        info, embedded = None, exc.info
    if info is not None:
        async with connect(info) as remote:
            yield remote, info
        return
    if not config.home.exists():
        # Looking changes nothing: a typo in --home must not leave a new home behind.
        raise PodiumError(
            f"Podium home {config.home} does not exist (check --home / PODIUM_HOME; the "
            "first `podium start` or `podium run` creates it)"
        )
    # The engine is imported only here: a call to a running conductor does without it.
    from podium.core.conductor import Conductor
    from podium.server.app import PodiumServer

    conductor = Conductor(config, dispatch=False, read_only=True)
    await conductor.start()
    try:
        server = PodiumServer(conductor)
        async with Client(server.mcp) as client:
            tools = (await client.list_tools()).tools
            read_only = frozenset(
                t.name for t in tools if t.annotations and t.annotations.read_only_hint
            )
            yield LocalReader(client, read_only, embedded), None
    finally:
        await conductor.stop()


@asynccontextmanager
async def controller(config: PodiumConfig) -> AsyncIterator[tuple[Remote, bool]]:
    """The running conductor, started (detached) when none runs."""
    info, started = await ensure_conductor(config)
    async with connect(info) as remote:
        yield remote, started
