"""The prompt a retry sends: the task again, and why the last attempt did not finish.

A retry that resumes the CLI's own session leads with the reason (the session already holds
the work so far) and repeats the task only for reference, so a resume the CLI silently turns
into a fresh session still has the whole task. A retry without a session sends the task with
the feedback after it.
"""

from __future__ import annotations

from collections.abc import Sequence

from podium.core.models import ValidationResult

CONTINUE_NOTE = (
    "Your previous run of this task stopped before it finished. "
    "Continue from where you left off and complete the task."
)
_TASK_HEADER = "The original task, for reference:"
# Each failed check is named with at most this much of its detail.
_DETAIL_CHARS = 300
_MAX_LISTED = 20


def validation_feedback(validations: Sequence[ValidationResult]) -> str | None:
    """A short prompt naming the checks the last attempt failed; None when none failed."""
    failed = [v for v in validations if not v.passed]
    if not failed:
        return None
    lines = ["Your previous run finished, but these checks of its result failed:"]
    for check in failed[:_MAX_LISTED]:
        detail = " ".join((check.detail or "failed").split())
        if len(detail) > _DETAIL_CHARS:
            detail = detail[: _DETAIL_CHARS - 1] + "…"
        lines.append(f"- {check.type}: {detail}")
    if len(failed) > _MAX_LISTED:
        lines.append(f"- … and {len(failed) - _MAX_LISTED} more")
    lines.append("Fix what they report so that every check passes, then finish the task.")
    return "\n".join(lines)


def attempt_prompt(prompt: str, *, feedback: str | None, resuming: bool) -> str:
    """The text sent to the CLI for one attempt (the sheet's rendered `prompt` on a first
    attempt, which has neither feedback nor a session to resume)."""
    if resuming:
        return f"{feedback or CONTINUE_NOTE}\n\n{_TASK_HEADER}\n\n{prompt}"
    if feedback:
        return f"{prompt}\n\n{feedback}"
    return prompt


_TAIL_HEADER = "The end of what your previous run printed:"


def with_output_tail(feedback: str, tail: str | None, limit: int = 2000) -> str:
    """Feedback that also shows the end of the previous attempt's output (prompt assembly
    on): what it printed is often why its checks failed."""
    text = (tail or "").strip()
    if not text:
        return feedback
    if len(text) > limit:
        text = "…" + text[-(limit - 1) :]
    return f"{feedback}\n\n{_TAIL_HEADER}\n{text}"
