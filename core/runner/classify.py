"""What a FAILED run's output says went wrong, by the profile's patterns (SPEC §6: patterns
never apply to a successful run).

Classes are tried in a fixed order: billing (waiting cannot help) before rate limits (a 429
that says "check your plan and billing details" is a stop, not a wait), then auth, then
transient. A rate limit also yields when it lifts, as an absolute UTC moment, from the first
of its patterns that matched and said so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from podium.core.instruments.jsondocs import matches, values_at
from podium.core.instruments.profile import InstrumentProfile, RateLimitPattern, ResetSpec
from podium.core.instruments.resets import local_zone, reset_moment
from podium.core.models import ErrorCategory, utcnow

EXCERPT_CHARS = 300
# A matched JSON event is mostly fields nobody reads in an error; its start names it, and the
# whole line is in the log (where `diagnose` finds it by that start).
EVENT_EXCERPT_CHARS = 160
_FLAGS = re.IGNORECASE | re.MULTILINE


@dataclass(frozen=True)
class FailureClass:
    category: ErrorCategory
    excerpt: str
    # Rate limits only: when the limit lifts (UTC), and how long that is from `now`.
    reset_at: datetime | None = None
    retry_after_seconds: float | None = None


def _excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reset(
    spec: ResetSpec | None,
    captured: Any,
    zone_name: str | None,
    now: datetime,
    zone: tzinfo,
) -> tuple[datetime | None, float | None]:
    if spec is None:
        return None, None
    value = spec.value if spec.value is not None else captured
    moment = reset_moment(value, spec.kind, now=now, zone=zone, zone_name=zone_name or spec.zone)
    if moment is None:
        return None, None
    return moment, max((moment - now).total_seconds(), 0.0)


def _rate_limit(
    pattern: RateLimitPattern,
    text: str,
    documents: Sequence[Any],
    now: datetime,
    zone: tzinfo,
) -> FailureClass | None:
    spec = pattern.reset_spec
    if pattern.regex is not None:
        match = re.search(pattern.regex, text, _FLAGS)
        if match is None:
            return None
        captured = match.group(spec.group) if spec is not None and spec.group else None
        zone_name = match.group(spec.zone_group) if spec is not None and spec.zone_group else None
        reset_at, wait = _reset(spec, captured, zone_name, now, zone)
        return FailureClass(ErrorCategory.RATE_LIMITED, _excerpt(match.group(0)), reset_at, wait)
    assert pattern.json_where is not None
    # The last matching event is the one the CLI gave up on.
    for document in reversed(documents):
        if not matches(document, pattern.json_where):
            continue
        captured = None
        if spec is not None and spec.path is not None:
            found = [v for v in values_at(document, spec.path) if v is not None]
            captured = found[0] if found else None
        reset_at, wait = _reset(spec, captured, None, now, zone)
        # Encoded as the Node CLIs print it, so the excerpt is the start of the log line.
        line = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        excerpt = _excerpt(line, EVENT_EXCERPT_CHARS)
        return FailureClass(ErrorCategory.RATE_LIMITED, excerpt, reset_at, wait)
    return None


def describe(found: FailureClass, instrument: str) -> str:
    """The failure as an error reads it: "<category>: <matched text>", except that a rate
    limit says whose it is and, when known, the UTC moment it lifts."""
    if found.category is not ErrorCategory.RATE_LIMITED:
        return f"{found.category.value}: {found.excerpt}"
    until = ""
    if found.reset_at is not None:
        until = f" until {found.reset_at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    return f"rate limited by {instrument}{until}: {found.excerpt}"


def classify_failure(
    profile: InstrumentProfile,
    text: str,
    *,
    documents: Sequence[Any] = (),
    now: datetime | None = None,
    zone: tzinfo | None = None,
) -> FailureClass | None:
    """The failure class `text` (and, for json_where patterns, the run's JSON `documents`)
    shows, or None. Clock times that name no zone are read in `zone` (default: the local
    zone, where the CLI printed them); `now` is the moment the run ended."""
    now = now or utcnow()
    zone = zone or local_zone()
    patterns = profile.patterns
    for regex in patterns.billing:
        match = re.search(regex, text, _FLAGS)
        if match:
            return FailureClass(ErrorCategory.BILLING, _excerpt(match.group(0)))
    # A CLI may say it is limited in several places, and only some say until when (a
    # rejection event without its reset, then the prose with it): the first pattern that
    # tells when the limit lifts wins, else the first that matched.
    limited: FailureClass | None = None
    for pattern in patterns.rate_limit:
        found = _rate_limit(pattern, text, documents, now, zone)
        if found is not None and found.reset_at is not None:
            return found
        limited = limited or found
    if limited is not None:
        return limited
    for category, regexes in (
        (ErrorCategory.AUTH, patterns.auth),
        (ErrorCategory.TRANSIENT, patterns.transient),
    ):
        for regex in regexes:
            match = re.search(regex, text, _FLAGS)
            if match:
                return FailureClass(category, _excerpt(match.group(0)))
    return None
