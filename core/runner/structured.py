"""What a JSON-emitting CLI reported about a run: its answer, an error flag, its session id,
and what the run cost. Read from stdout on every run, failed or not (a failed run's session
is the one a retry resumes, and its tokens were spent all the same)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from podium.core.instruments.jsondocs import JsonSelector, select
from podium.core.instruments.profile import InstrumentProfile, usable_session_id


@dataclass(frozen=True)
class StructuredReport:
    answer: str | None = None
    reported_error: bool = False
    # Whether the profile's error flag (`output.error_path`) was found at all, true or false:
    # when not, the run may have reported an error in output that could not be read.
    error_seen: bool = False
    session_id: str | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None


# More tokens than any run spends: a larger count is garbage, and would not fit the store's
# 64-bit integers (nor the job's totals).
MAX_TOKENS = 10**12


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: an int of hundreds of digits
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _pick(selector: JsonSelector | None, documents: Sequence[Any]) -> Any:
    return None if selector is None else select(selector, documents)


def _tokens(selector: JsonSelector | None, documents: Sequence[Any]) -> int | None:
    number = _number(_pick(selector, documents))
    return None if number is None or number > MAX_TOKENS else int(number)


def read_structured(profile: InstrumentProfile, documents: Sequence[Any]) -> StructuredReport:
    if not documents:
        return StructuredReport()
    output = profile.output
    found = _pick(output.result_path, documents)
    answer = None if found is None else found if isinstance(found, str) else json.dumps(found)
    flagged = _pick(output.error_path, documents)
    session_id = None
    if profile.session is not None:
        session_id = usable_session_id(_pick(profile.session.id_path, documents))
    usage = profile.usage
    if usage is None:
        return StructuredReport(
            answer=answer,
            reported_error=bool(flagged),
            error_seen=flagged is not None,
            session_id=session_id,
        )
    return StructuredReport(
        answer=answer,
        reported_error=bool(flagged),
        error_seen=flagged is not None,
        session_id=session_id,
        cost_usd=_number(_pick(usage.cost_usd_path, documents)),
        input_tokens=_tokens(usage.input_tokens_path, documents),
        output_tokens=_tokens(usage.output_tokens_path, documents),
        cache_read_tokens=_tokens(usage.cache_read_tokens_path, documents),
        cache_write_tokens=_tokens(usage.cache_write_tokens_path, documents),
    )
