"""What a FAILED run's output says went wrong, by the profile's patterns (SPEC §6: patterns
never apply to a successful run).

Classes are tried in a fixed order: billing (waiting cannot help) before rate limits (a 429
that says "check your plan and billing details" is a stop, not a wait), then auth, then
transient. Every regex is searched case-insensitively, `^` and `$` at line ends, as Python's
`re` would, but never by `re` in the conductor (see `regex.search_patterns`). A rate limit
also yields when it lifts, as an absolute UTC moment, from the first of its patterns that
matched and said so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from podium.core.instruments.jsondocs import matches, values_at
from podium.core.instruments.profile import InstrumentProfile, RateLimitPattern, ResetSpec
from podium.core.instruments.resets import local_zone, reset_moment
from podium.core.models import ErrorCategory, utcnow
from podium.core.runner.regex import PatternMatch, PatternOutcome, search_patterns

EXCERPT_CHARS = 300
# A matched JSON event is mostly fields nobody reads in an error; its start names it, and the
# whole line is in the log (where `diagnose` finds it by that start).
EVENT_EXCERPT_CHARS = 160


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
    if moment is None or moment <= now:
        # A moment already past ("resets 10:28am" printed at 10:30, a stale event) says
        # nothing about when the limit lifts: no "until" in the error that the wait (a
        # backoff) would contradict, and a later pattern that names a moment to come wins.
        return None, None
    return moment, (moment - now).total_seconds()


def _rate_limit(
    pattern: RateLimitPattern,
    searched: PatternOutcome | None,
    documents: Sequence[Any],
    now: datetime,
    zone: tzinfo,
) -> FailureClass | None:
    spec = pattern.reset_spec
    if pattern.regex is not None:
        match = searched.match if searched is not None else None
        if match is None:
            return None
        captured = match.groups.get(spec.group) if spec is not None and spec.group else None
        zone_name = (
            match.groups.get(spec.zone_group) if spec is not None and spec.zone_group else None
        )
        reset_at, wait = _reset(spec, captured, zone_name, now, zone)
        return FailureClass(ErrorCategory.RATE_LIMITED, _excerpt(match.text), reset_at, wait)
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


def profile_regexes(profile: InstrumentProfile) -> dict[str, str]:
    """Every regex of the profile's patterns by its key in the profile, in the order
    classes are tried."""
    patterns = profile.patterns
    found = {f"patterns.billing.{i}": r for i, r in enumerate(patterns.billing)}
    for i, pattern in enumerate(patterns.rate_limit):
        if pattern.regex is not None:
            found[f"patterns.rate_limit.{i}.regex"] = pattern.regex
    for name, regexes in (("auth", patterns.auth), ("transient", patterns.transient)):
        found.update({f"patterns.{name}.{i}": r for i, r in enumerate(regexes)})
    return found


@dataclass(frozen=True)
class Classification:
    found: FailureClass | None
    # Patterns that could not be searched to an answer (each `key: why`); they count as no
    # match, and the attempt's error says so.
    problems: tuple[str, ...] = ()


async def classify_failure(
    profile: InstrumentProfile,
    text: str,
    *,
    documents: Sequence[Any] = (),
    now: datetime | None = None,
    zone: tzinfo | None = None,
    kill_grace_seconds: float = 1.0,
) -> Classification:
    """The failure class `text` (and, for json_where patterns, the run's JSON `documents`)
    shows, if any. Clock times that name no zone are read in `zone` (default: the local
    zone, where the CLI printed them); `now` is the moment the run ended.

    The profile's regexes are a user's, so they never run on Python's `re` here (one that
    backtracks would hold the event loop): see `regex.search_patterns`."""
    regexes = profile_regexes(profile)
    outcomes = await search_patterns(
        list(regexes.values()), text, kill_grace_seconds=kill_grace_seconds
    )
    searched = dict(zip(regexes, outcomes, strict=True))
    problems = tuple(f"{key}: {o.error}" for key, o in searched.items() if o.error is not None)
    found = _classify(profile, searched, documents, now or utcnow(), zone or local_zone())
    return Classification(found, problems)


def _first_match(
    searched: Mapping[str, PatternOutcome], prefix: str, count: int
) -> PatternMatch | None:
    for i in range(count):
        outcome = searched.get(f"{prefix}.{i}")
        if outcome is not None and outcome.match is not None:
            return outcome.match
    return None


def _classify(
    profile: InstrumentProfile,
    searched: Mapping[str, PatternOutcome],
    documents: Sequence[Any],
    now: datetime,
    zone: tzinfo,
) -> FailureClass | None:
    patterns = profile.patterns
    match = _first_match(searched, "patterns.billing", len(patterns.billing))
    if match is not None:
        return FailureClass(ErrorCategory.BILLING, _excerpt(match.text))
    # A CLI may say it is limited in several places, and only some say until when (a
    # rejection event without its reset, then the prose with it): the first pattern that
    # tells when the limit lifts wins, else the first that matched.
    limited: FailureClass | None = None
    for i, pattern in enumerate(patterns.rate_limit):
        outcome = searched.get(f"patterns.rate_limit.{i}.regex")
        found = _rate_limit(pattern, outcome, documents, now, zone)
        if found is not None and found.reset_at is not None:
            return found
        limited = limited or found
    if limited is not None:
        return limited
    for category, name, regexes in (
        (ErrorCategory.AUTH, "auth", patterns.auth),
        (ErrorCategory.TRANSIENT, "transient", patterns.transient),
    ):
        match = _first_match(searched, f"patterns.{name}", len(regexes))
        if match is not None:
            return FailureClass(category, _excerpt(match.text))
    return None
