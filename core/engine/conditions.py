"""Deciding whether a sheet about to start is skipped by its condition (`skip_when`,
`skip_when_command`). The expression is decided inside the start op, on the rows it reads;
the command runs before that op (it takes time), in the workspace, with the sheet's slot
held."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podium.core.runner.process import run_captured
from podium.core.spec.conditions import SkipWhenCommand
from podium.core.spec.expressions import evaluate
from podium.core.spec.loader import ResolvedSheet
from podium.core.spec.sheet_reads import SHEETS_NAME, sheet_number
from podium.core.spec.templating import TemplateContext, context_variables
from podium.core.store.rows import SheetRow

_SHOWN_EXPRESSION = 200


@dataclass(frozen=True)
class SheetView:
    """A sheet as a `skip_when` expression sees it (`sheets[2].status == 'failed'`)."""

    sheet_num: int
    name: str | None
    status: str
    output: str
    error_category: str | None
    last_error: str | None
    attempts: int

    # The names a Marianne score's conditions use for the same things.
    @property
    def stdout_tail(self) -> str:
        return self.output

    @property
    def attempt_count(self) -> int:
        return self.attempts

    @property
    def error_message(self) -> str | None:
        return self.last_error

    @property
    def validation_passed(self) -> bool | None:
        """True once completed, False when its checks failed, None otherwise."""
        if self.status == "completed":
            return True
        return False if self.error_category == "validation_failed" else None


class SheetsView(Mapping[Any, SheetView]):
    """The job's sheets by number (or digit string) or name."""

    def __init__(self, rows: Mapping[int, SheetRow], names: Mapping[str, int]) -> None:
        self._rows = rows
        self._names = names

    def _num(self, key: object) -> int | None:
        # As the check at submit resolves it, so the two agree on which reads can work.
        num = sheet_number(key, self._names)
        return num if num in self._rows else None

    def __getitem__(self, key: object) -> SheetView:
        num = self._num(key)
        if num is None:
            raise KeyError(key)
        row = self._rows[num]
        return SheetView(
            num,
            row.name,
            row.status.value,
            row.output_tail or "",
            row.error_category.value if row.error_category else None,
            row.last_error,
            row.attempts,
        )

    def __contains__(self, key: object) -> bool:
        return self._num(key) is not None

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._rows))

    def __len__(self) -> int:
        return len(self._rows)


def skip_when_reason(
    resolved: ResolvedSheet,
    ctx: TemplateContext,
    rows: Mapping[int, SheetRow],
    names: Mapping[str, int],
) -> str | None:
    """Why the sheet is skipped, or None when it runs (raises `TemplateRenderError`)."""
    expr = resolved.skip_when
    if expr is None:
        return None
    values = context_variables(ctx)
    values[SHEETS_NAME] = SheetsView(rows, names)
    if not evaluate(expr, values):
        return None
    shown = expr if len(expr) <= _SHOWN_EXPRESSION else expr[: _SHOWN_EXPRESSION - 1] + "…"
    return f"skipped: skip_when {shown!r} is true"


async def skip_command_reason(
    condition: SkipWhenCommand,
    command: str,
    *,
    workspace: Path,
    env: Mapping[str, str],
    kill_grace_seconds: float,
) -> tuple[str | None, str]:
    """(why the sheet is skipped or None, what the command did). Only exit 0 skips: a
    command that fails, times out or cannot start lets the sheet run."""
    outcome, _ = await run_captured(
        ["bash", "-c", command],
        cwd=workspace,
        env=env,
        timeout_seconds=condition.timeout_seconds,
        kill_grace_seconds=kill_grace_seconds,
        capture_bytes=4096,
    )
    if outcome.spawn_error is not None:
        return None, f"could not start: {outcome.spawn_error}"
    if outcome.timed_out:
        return None, f"timed out after {condition.timeout_seconds:g}s"
    if outcome.signal is not None:
        return None, f"killed by signal {outcome.signal}"
    if outcome.exit_code != 0:
        return None, f"exited {outcome.exit_code}"
    why = f" ({condition.description})" if condition.description else ""
    return f"skipped: skip_when_command exited 0{why}", "exited 0"
