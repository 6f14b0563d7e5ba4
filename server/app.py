"""Assembles the MCP server over a running `Conductor`.

The conductor is owned by the process, not by the MCP lifespan (SSE runs a lifespan per
connection), so every transport and connection shares one engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import InMemorySubscriptionBus

from podium.core.conductor import Conductor
from podium.core.errors import NotFoundError, quoted
from podium.core.version import podium_version
from podium.server.app_view import apps_extension
from podium.server.guard import RequestGuard
from podium.server.notifier import JOBS_URI, ChangeNotifier, checkpoint_job
from podium.server.prompts import PROMPT_NAMES, register_prompts
from podium.server.resources import register_resources
from podium.server.task_listen import TaskListen
from podium.server.tasks import TasksExtension
from podium.server.tools import build_tools

INSTRUCTIONS = """Podium runs long, parallel, multi-step work in the background and never loses it.
Submit a job (submit_job) whose sheets are shell commands or AI coding CLI runs, with
dependencies, validations and retries; then follow it with `status` (pass wait_seconds to wait
for a change instead of polling), read output with `logs`, and control it with pause, resume
and cancel. The spec format: submit_job's description, the resource podium://spec/schema and
the prompt spec_from_task; check a spec first with validate_spec. Every field of a result's
output schema is always present (null when it does not apply). Jobs survive restarts of
this server."""


class StaticTokenVerifier:
    """Bearer-token check for HTTP transports, in constant time."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def verify_token(self, token: str) -> AccessToken | None:
        import hmac

        if hmac.compare_digest(token.encode(), self._token.encode()):
            return AccessToken(token=token, client_id="podium-client", scopes=["podium"])
        return None


class PodiumServer:
    def __init__(
        self,
        conductor: Conductor,
        *,
        token: str | None = None,
        issuer_url: str = "http://127.0.0.1",
    ) -> None:
        self.conductor = conductor
        self.bus = InMemorySubscriptionBus()
        auth: dict[str, Any] = {}
        if token:
            auth = {
                "token_verifier": StaticTokenVerifier(token),
                "auth": AuthSettings(
                    issuer_url=issuer_url,
                    resource_server_url=None,
                    required_scopes=["podium"],
                ),
            }
        tools = build_tools(conductor)
        self.mcp: MCPServer[Any] = MCPServer(
            "podium",
            version=podium_version(),
            instructions=" ".join(INSTRUCTIONS.split()),  # one paragraph, not source lines
            subscriptions=self.bus,
            tools=tools,
            extensions=[apps_extension(), TasksExtension(conductor)],
            **auth,
        )
        self.mcp.middleware.append(
            RequestGuard({t.name: t for t in tools}, PROMPT_NAMES, self._subscribe_problem)
        )
        # After the guard (which checks the resources asked for): listens for task ids.
        self.mcp.middleware.append(TaskListen(conductor, self.bus))
        register_resources(self.mcp, conductor)
        register_prompts(self.mcp)
        self.notifier = ChangeNotifier(self.bus, conductor.events)
        self.notifier.install_legacy_handlers(self.mcp, self._subscribe_problem)

    async def _subscribe_problem(self, uri: str) -> str | None:
        """Only `podium://jobs` and the checkpoints of known jobs change (SPEC §7)."""
        if uri == JOBS_URI:
            return None
        job_id = checkpoint_job(uri)
        if job_id is None:
            return (
                f"resource {quoted(uri)} not found for subscription; subscribe to {JOBS_URI} or "
                "podium://jobs/{job_id}/checkpoint"
            )
        try:
            await self.conductor.get_job(job_id, sheet_limit=1)
        except NotFoundError as exc:
            return str(exc)
        return None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[PodiumServer]:
        """Runs the change notifier for as long as the server is up."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.notifier.run)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()
