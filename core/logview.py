"""Reading sheet logs for views: only from Podium's own logs directory, paged and capped."""

from __future__ import annotations

from pathlib import Path

from podium.core.errors import NotFoundError, PathNotAllowedError, PodiumError, quoted
from podium.core.paths import confine
from podium.core.runner.logs import read_log_range, read_log_tail
from podium.core.store.base import Store
from podium.core.store.rows import JobRow
from podium.core.views import LogChunk

LOG_PAGE_BYTES = 256 * 1024


class LogReader:
    def __init__(self, store: Store, logs_dir: Path) -> None:
        self.store = store
        self._logs_dir = logs_dir

    async def read(
        self,
        job: JobRow,
        *,
        sheet: int | None = None,
        attempt: int | None = None,
        tail_lines: int = 200,
        offset: int | None = None,
    ) -> LogChunk:
        """A sheet attempt's log (latest attempt by default), or with no sheet the combined
        tail of every sheet's latest log. `offset` pages forward from a byte offset."""
        job_id = job.job_id
        if sheet is None:
            if attempt is not None or offset is not None:
                raise PodiumError("attempt and offset need a sheet: give sheet as well")
            return await self._combined_log(job, tail_lines)
        row = await self.store.get_sheet(job_id, sheet)
        if row is None:
            raise NotFoundError(
                f"sheet: sheet {sheet} of job {quoted(job_id)} not found (it has "
                f"{job.total_sheets})"
            )
        record = (
            await self.store.get_attempt(job_id, sheet, attempt)
            if attempt is not None
            else await self.store.get_latest_attempt(job_id, sheet)
        )
        if record is None and attempt is not None:
            raise NotFoundError(
                f"attempt: attempt {attempt} of sheet {sheet} of job {quoted(job_id)} not found"
            )
        if record is None:
            # Not run yet: an empty log, so an agent can poll a sheet before it starts.
            return LogChunk(
                text="",
                sheet_num=sheet,
                attempt=None,
                truncated=False,
                next_offset=0,
                total_bytes=0,
            )
        if self._elsewhere(record.log_path):
            who = f"conductor {quoted(record.conductor_id)}" if record.conductor_id else None
            raise NotFoundError(
                f"sheet: attempt {record.attempt} of sheet {sheet} of job {quoted(job_id)} "
                f"ran on {who or 'another conductor'}, whose home holds its log "
                f"({record.log_path}); this conductor reads logs only from its own "
                f"({self._logs_dir}): read it through {who or 'that conductor'}"
            )
        path = self._log_file(record.log_path)
        if path is None:
            return LogChunk(
                text="",
                sheet_num=sheet,
                attempt=record.attempt,
                truncated=False,
                next_offset=0,
                total_bytes=0,
            )
        size = path.stat().st_size
        if offset is not None:
            text, next_offset, more = read_log_range(path, offset, LOG_PAGE_BYTES)
            return LogChunk(
                text=text,
                sheet_num=sheet,
                attempt=record.attempt,
                truncated=more,
                next_offset=next_offset,
                total_bytes=size,
            )
        # Lines and bytes: a log that is one 4 MiB line is still one line.
        text = read_log_tail(path, tail_lines, LOG_PAGE_BYTES)
        shown = len(text.encode())
        return LogChunk(
            text=text,
            sheet_num=sheet,
            attempt=record.attempt,
            truncated=shown < size,
            next_offset=size,
            total_bytes=size,
        )

    def _elsewhere(self, log_path: str | None) -> bool:
        """Whether a log the store records is outside this conductor's logs directory: on a
        shared store, one another conductor wrote in its own home."""
        if not log_path:
            return False
        try:
            confine(log_path, [self._logs_dir], field="log_path")
        except PathNotAllowedError:
            return True
        return False

    def _log_file(self, log_path: str | None) -> Path | None:
        """Logs are read only from Podium's own logs directory, whatever the store says."""
        if not log_path:
            return None
        path = confine(log_path, [self._logs_dir], field="log_path")
        return path if path.is_file() else None

    async def _combined_log(self, job: JobRow, tail_lines: int) -> LogChunk:
        parts = []
        truncated = False
        rows = await self.store.get_sheets(job.job_id)
        # The whole answer stays within LOG_PAGE_BYTES, shared between the sheets' tails.
        share = max(4096, LOG_PAGE_BYTES // max(1, len(rows)))
        left = LOG_PAGE_BYTES
        for row in rows:
            label = f" ({row.name})" if row.name else ""
            header = f"===== sheet {row.sheet_num}{label}: {row.status.value} =====\n"
            if self._elsewhere(row.log_path):
                # Ran on another conductor: say so rather than fail the whole answer.
                stub = f"{header}[its log is in the home of the conductor that ran it]"
                left -= len(stub) + 1
                parts.append(stub)
                continue
            path = self._log_file(row.log_path)
            if path is None:
                continue
            room = min(share, left - len(header) - 1)
            if room <= 0:
                truncated = True
                break
            text = read_log_tail(path, tail_lines, room)
            left -= len(header) + 1 + len(text.encode())
            truncated = truncated or len(text.encode()) < path.stat().st_size
            parts.append(header + text)
        return LogChunk(
            text="\n".join(parts),
            sheet_num=None,
            attempt=None,
            truncated=truncated,
            next_offset=None,
            total_bytes=None,
        )
