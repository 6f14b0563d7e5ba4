"""A few lines of a failing attempt's log, centred on the recorded error: what the `diagnose`
answer shows instead of the whole log."""

from __future__ import annotations

import re

from podium.core.diagnosis_answer import clip
from podium.core.runner.logs import truncated_at as truncated_at

# The lines of a log's tail read to find the error in.
LOG_TAIL_SCANNED = 400
MAX_EXCERPT_LINES = 12
MAX_LINE_CHARS = 240
_CONTEXT_BEFORE = 5
_CONTEXT_AFTER = 4
# What an error line tends to contain, when the recorded error names nothing to search for.
_ERRORISH = re.compile(
    r"error|fail|exception|traceback|denied|not found|no such|timed? ?out|fatal|panic|"
    r"refused|invalid|unauthori[sz]ed|forbidden|limit",
    re.IGNORECASE,
)
# A classified failure ends with "; <category>: <matched text>", a rate limit with "; rate
# limited by <instrument>[ until <moment>]: <matched text>" (see `classify.describe`; the
# older "; rate_limited: " of stored errors too), and the engine may add why it gave up.
_MATCHED_TEXT = re.compile(
    r"; (?:rate_limited|auth|transient|billing"
    r"|rate limited by [a-z0-9._-]+(?: until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)?)"
    r": (.+?)(?:; still rate limited after \d+ waits)?$",
    re.DOTALL,
)


def excerpt_around(text: str, error: str | None) -> tuple[list[str], str | None]:
    """A few lines of a log tail centred on the recorded error: the text a pattern matched
    when there is one, else the last line that looks like an error, else the last lines."""
    lines = text.splitlines()
    if not lines:
        return [], None
    needle = None
    if error:
        found = _MATCHED_TEXT.search(error)
        if found:
            needle = (
                found.group(1).strip().splitlines()[0][:120] if found.group(1).strip() else None
            )
    index = None
    if needle:
        for i in range(len(lines) - 1, -1, -1):
            if needle in lines[i]:
                index = i
                break
    if index is None:
        for i in range(len(lines) - 1, -1, -1):
            if _ERRORISH.search(lines[i]):
                index = i
                needle = None
                break
    if index is None:
        chosen = list(range(max(0, len(lines) - MAX_EXCERPT_LINES), len(lines)))
    else:
        start = max(0, index - _CONTEXT_BEFORE)
        chosen = list(range(start, min(len(lines), index + _CONTEXT_AFTER + 1)))
        if index < len(lines) - 1 - _CONTEXT_AFTER:
            # The error is not at the end: the last line says how the run ended.
            chosen = [*chosen[: MAX_EXCERPT_LINES - 2], -1, len(lines) - 1]
    around = None
    if index is not None:
        # AI CLIs print one long JSON object a line: the error is often past what a clip
        # from the start keeps, so the line the excerpt centres on is cut around the error.
        line = lines[index]
        if needle:
            at = line.find(needle)
            span = (at, at + len(needle))
        else:
            errorish = _ERRORISH.search(line)
            span = errorish.span() if errorish else (0, 0)
        around = _clip_around(line, span, MAX_LINE_CHARS)
    shown = [
        "..." if i < 0 else around if i == index and around is not None else lines[i]
        for i in chosen[-MAX_EXCERPT_LINES:]
    ]
    matched = needle or around
    return [clip(line, MAX_LINE_CHARS) or "" for line in shown], clip(matched, MAX_LINE_CHARS)


def _clip_around(line: str, span: tuple[int, int], limit: int) -> str:
    """At most `limit` characters of `line` that keep the text at `span` (start, end),
    with "..." where the line was cut."""
    if len(line) <= limit:
        return line
    start, end = span
    if end <= limit - 3:
        return line[: limit - 3] + "..."
    keep = limit - 6
    begin = max(0, start - (keep - (end - start)) // 2)
    if begin + keep >= len(line) - 3:
        return "..." + line[len(line) - (limit - 3) :]
    return "..." + line[begin : begin + keep] + "..."
