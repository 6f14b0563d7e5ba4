"""The MCP resources (SPEC §7): JSON views of the store and plain-text logs."""

from __future__ import annotations

import json
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from podium.core.conductor import Conductor
from podium.core.errors import NotFoundError, PodiumError, quoted
from podium.core.spec import spec_json_schema

HISTORY_LIMIT = 10_000
RECENT_JOBS = 100
LOG_TAIL_LINES = 500


SPEC_SCHEMA_URI = "podium://spec/schema"
APPROVALS_URI = "podium://approvals"
APPROVALS_LISTED = 500


def _json(value: Any) -> str:
    # Compact: agents pay per character, and every JSON reader handles it.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def register_resources(mcp: MCPServer[Any], conductor: Conductor) -> None:
    async def guarded(coro: Any) -> str:
        try:
            result: str = await coro
            return result
        except NotFoundError as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        except PodiumError as exc:
            raise ResourceError(str(exc)) from exc
        except (ValueError, OverflowError, RecursionError, OSError) as exc:
            # One mapping for every resource: a readable error, never -32603 with nothing.
            raise ResourceError(f"{type(exc).__name__}: {exc}") from exc

    @mcp.resource(
        SPEC_SCHEMA_URI,
        name="spec-schema",
        description="JSON Schema of a job spec (what submit_job and validate_spec accept)",
        mime_type="application/json",
    )
    def spec_schema() -> str:
        return _json(spec_json_schema())

    @mcp.resource(
        "podium://conductor/status",
        name="conductor-status",
        description="The conductor: version, jobs by status, running sheets, rate limits, "
        "instruments",
        mime_type="application/json",
    )
    async def conductor_status() -> str:
        async def read() -> str:
            return _json((await conductor.status()).model_dump(mode="json"))

        return await guarded(read())

    @mcp.resource(
        APPROVALS_URI,
        name="approvals",
        description=f"Approval sheets waiting for a decision (up to {APPROVALS_LISTED}), "
        "oldest first: answer each with the approve tool",
        mime_type="application/json",
    )
    async def approvals() -> str:
        async def read() -> str:
            listed = await conductor.approvals.pending(APPROVALS_LISTED)
            return _json(listed.model_dump(mode="json"))

        return await guarded(read())

    @mcp.resource(
        "podium://jobs",
        name="jobs",
        description=f"The {RECENT_JOBS} most recent jobs as summaries, newest first",
        mime_type="application/json",
    )
    async def jobs() -> str:
        async def read() -> str:
            summaries, next_cursor = await conductor.list_jobs(limit=RECENT_JOBS)
            return _json(
                {
                    "jobs": [s.model_dump(mode="json") for s in summaries],
                    "next_cursor": next_cursor,
                }
            )

        return await guarded(read())

    @mcp.resource(
        "podium://jobs/{job_id}/checkpoint",
        name="job-checkpoint",
        description="A job with every sheet and its spec (env values redacted); subscribe to "
        "be told when it changes",
        mime_type="application/json",
    )
    async def checkpoint(job_id: str) -> str:
        async def read() -> str:
            return _json((await conductor.checkpoint(job_id)).model_dump(mode="json"))

        return await guarded(read())

    @mcp.resource(
        "podium://jobs/{job_id}/history",
        name="job-history",
        description="Execution history: one entry per attempt of every sheet",
        mime_type="application/json",
    )
    async def history(job_id: str) -> str:
        async def read() -> str:
            entries, total = await conductor.get_execution_history(job_id, limit=HISTORY_LIMIT)
            return _json(
                {
                    "job_id": job_id,
                    "total": total,
                    "truncated": total > len(entries),
                    "entries": [e.model_dump(mode="json") for e in entries],
                }
            )

        return await guarded(read())

    @mcp.resource(
        "podium://jobs/{job_id}/logs",
        name="job-logs",
        description=f"The last {LOG_TAIL_LINES} lines of every sheet's latest log",
        mime_type="text/plain",
    )
    async def job_logs(job_id: str) -> str:
        async def read() -> str:
            chunk = await conductor.read_logs(job_id, tail_lines=LOG_TAIL_LINES)
            return chunk.text

        return await guarded(read())

    @mcp.resource(
        "podium://jobs/{job_id}/sheets/{sheet_num}/log",
        name="sheet-log",
        description=f"The last {LOG_TAIL_LINES} lines of a sheet's latest attempt log (the "
        "sheet by number, or by name)",
        mime_type="text/plain",
    )
    async def sheet_log(job_id: str, sheet_num: str) -> str:
        async def read() -> str:
            # The engine reads a sheet number (or name) from text itself: it checks the job
            # first, then the range, so an unknown job is never reported as a missing sheet.
            chunk = await conductor.read_logs(job_id, sheet=sheet_num, tail_lines=LOG_TAIL_LINES)
            return chunk.text

        return await guarded(read())

    @mcp.resource(
        "podium://snapshots/{job_id}/{snapshot_id}",
        name="snapshot-manifest",
        description="A snapshot's manifest: files, size, creation time",
        mime_type="application/json",
    )
    async def snapshot(job_id: str, snapshot_id: str) -> str:
        async def read() -> str:
            for info in await conductor.list_snapshots(job_id):
                if info.snapshot_id == snapshot_id:
                    return _json(info.model_dump(mode="json"))
            raise NotFoundError(f"snapshot {quoted(snapshot_id)} of job {quoted(job_id)} not found")

        return await guarded(read())
