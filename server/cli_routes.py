"""HTTP routes only the CLI uses, beside `/mcp` on a conductor that has a bearer token.

`podium run SPEC` may use the spec file's folder as a workspace root for that job (SPEC §3);
an MCP tool must never grant that, or any agent could place workspaces anywhere. The CLI
holds the token from the 0600 `conductor.json`, the same trust as the user; an agent behind
the stdio bridge cannot reach these routes (the bridge forwards only MCP messages to `/mcp`).
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import TYPE_CHECKING

from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from podium.core.errors import PodiumError, SpecError

if TYPE_CHECKING:
    # The CLI imports this module for SUBMIT_PATH alone; the engine it does not need.
    from podium.core.conductor import Conductor

SUBMIT_PATH = "/podium/cli/submit"


class CliSubmit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    job_id: str | None = None
    start: bool = True


def _authorized(request: Request, token: str) -> bool:
    given = request.headers.get("authorization", "")
    expected = f"Bearer {token}"
    return hmac.compare_digest(given.encode(), expected.encode())


def add_cli_routes(mcp: MCPServer[object], conductor: Conductor, token: str) -> None:
    async def submit(request: Request) -> JSONResponse:
        if not _authorized(request, token):
            return JSONResponse({"error": "a valid bearer token is required"}, status_code=401)
        try:
            body = CliSubmit.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        path = Path(body.path)
        if not path.is_absolute():
            return JSONResponse({"error": f"path: {body.path!r} must be absolute"}, 400)
        try:
            submitted = await conductor.submit_job(
                path=path, job_id=body.job_id, start=body.start, extra_roots=[path.parent]
            )
        except SpecError as exc:
            errors = [str(e) for e in exc.errors]
            return JSONResponse({"error": "invalid job spec", "errors": errors}, status_code=422)
        except PodiumError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(submitted.model_dump(mode="json"))

    mcp.custom_route(SUBMIT_PATH, methods=["POST"])(submit)
