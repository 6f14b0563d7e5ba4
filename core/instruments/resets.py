"""When a usage limit lifts, from the words an AI CLI prints.

CLIs state a reset as seconds ("retry in 15.0s"), a duration ("try again in 2 days 17 hours
14 minutes", "1h49m8s"), a clock time with an optional date and zone ("resets 1pm
(Europe/Lisbon)", "resets Apr 23 at 4pm", "try again at 12:16 PM") or an epoch
("limit reached|1750708800"). Everything here is pure: the caller passes `now` and the zone
for clock times that name none, so tests run against a frozen clock.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ResetKind = Literal["auto", "seconds", "duration", "clock", "epoch"]
RESET_KINDS: tuple[str, ...] = ("auto", "seconds", "duration", "clock", "epoch")

# A clock time this far in the past still means "now" (the CLI printed it a moment before it
# exited); further back, it means the next such moment (tomorrow, next week, next year).
PAST_GRACE = timedelta(minutes=5)
# Epochs outside these years are not reset times (a typo'd or unrelated number).
_EPOCH_MIN = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
_EPOCH_MAX = datetime(2200, 1, 1, tzinfo=UTC).timestamp()
_MAX_RESET_SECONDS = 10 * 365 * 24 * 3600.0
_MAX_TEXT = 200

_UNITS = {
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "ms": 0.001,
}  # fmt: skip
_DURATION_PART = re.compile(
    r"(\d+(?:\.\d+)?)\s*(days?|d|hours?|hrs?|h|minutes?|mins?|ms|m|seconds?|secs?|s)(?![a-z])"
)
_DURATION_GLUE = re.compile(r"^(?:\s|,|and\b)*$")

_MONTHS = {
    name: number
    for number, names in enumerate(
        [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
         ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
         ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
         ("dec", "december")],
        start=1,
    )
    for name in names
}  # fmt: skip
_WEEKDAYS = {
    name: number
    for number, names in enumerate(
        [("mon", "monday"), ("tue", "tues", "tuesday"), ("wed", "wednesday"),
         ("thu", "thur", "thurs", "thursday"), ("fri", "friday"), ("sat", "saturday"),
         ("sun", "sunday")]
    )
    for name in names
}  # fmt: skip
_CLOCK = re.compile(
    r"^(?:(?P<rel>today|tomorrow)\s+)?"
    r"(?:(?P<wd>[a-z]+)\s+)??"
    r"(?:(?P<mon>[a-z]+)\.?\s+(?P<day>\d{1,2})(?:\s+(?P<year>\d{4}))?\s+)?"
    r"(?:(?P<noon>noon|midnight)|(?P<h>\d{1,2})(?::(?P<mi>\d{2}))?(?::(?P<s>\d{2}))?"
    r"\s*(?P<ap>am|pm|a\.m\.?|p\.m\.?)?)"
    r"(?:\s+(?P<rel2>today|tomorrow))?$"
)
# Zone abbreviations CLIs print ("resets 1pm (PST)"), as the fixed offset each one names;
# the ambiguous ones (CST, IST, ...) are left out: a wrong guess is worse than the fallback.
_ABBREVIATIONS = {
    "hst": -10, "akst": -9, "akdt": -8, "pst": -8, "pdt": -7, "mst": -7, "mdt": -6,
    "cdt": -5, "est": -5, "edt": -4, "wet": 0, "west": 1, "bst": 1, "cet": 1, "cest": 2,
    "eet": 2, "eest": 3, "msk": 3, "jst": 9, "kst": 9, "aest": 10, "aedt": 11, "nzst": 12,
    "nzdt": 13,
}  # fmt: skip
_OFFSET = re.compile(r"^(?:utc|gmt)\s*([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)
_ZONE_IN_PARENS = re.compile(
    r"\(\s*([A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+)*(?::\d{2})?)\s*\)"
)
_TRAILING_ZONE = re.compile(
    r"\s+(utc|gmt|z|[A-Za-z]+/[A-Za-z0-9_+\-/]+|(?:utc|gmt)\s*[+-]\d{1,2}(?::?\d{2})?|"
    + "|".join(_ABBREVIATIONS)
    + r")$",
    re.IGNORECASE,
)


def local_zone() -> tzinfo:
    """The machine's own zone (CLIs print reset clock times in it), as an IANA zone when it
    can be found, so "next such moment" crosses a DST change correctly."""
    name = os.environ.get("TZ", "").lstrip(":")
    candidates = [name] if name else []
    try:
        target = str(Path("/etc/localtime").resolve())
    except OSError:
        target = ""
    if "zoneinfo/" in target:
        candidates.append(target.split("zoneinfo/", 1)[1])
    for candidate in candidates:
        zone = zone_named(candidate)
        if zone is not None:
            return zone
    return datetime.now().astimezone().tzinfo or UTC


def zone_named(name: str | None) -> tzinfo | None:
    """An IANA zone, UTC, an offset from it ("UTC+2", "GMT-05:30") or an unambiguous
    abbreviation ("PST"); None for anything else."""
    if not name:
        return None
    name = name.strip()
    if name.upper() in ("UTC", "GMT", "Z"):
        return UTC
    hours = _ABBREVIATIONS.get(name.lower())
    if hours is not None:
        return timezone(timedelta(hours=hours), name.upper())
    offset = _OFFSET.match(name)
    if offset is not None:
        sign = -1 if offset.group(1) == "-" else 1
        delta = timedelta(hours=int(offset.group(2)), minutes=int(offset.group(3) or 0))
        return timezone(sign * delta) if delta < timedelta(hours=15) else None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def parse_duration(text: str) -> float | None:
    """Seconds in "2 days 17 hours 14 minutes", "1h49m8s", "15.0s", "in 5 minutes"; None
    when the text is anything but a duration."""
    text = text.strip().lower()[:_MAX_TEXT].rstrip(".!;")
    text = re.sub(r"^(?:in|after)\s+", "", text)
    total = 0.0
    position = 0
    found = False
    for match in _DURATION_PART.finditer(text):
        if not _DURATION_GLUE.match(text[position : match.start()]):
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
        found = True
    if not found or not _DURATION_GLUE.match(text[position:]):
        return None
    return total


def parse_epoch(value: Any) -> datetime | None:
    """A Unix time in seconds (or milliseconds) as an aware UTC datetime."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number > _EPOCH_MAX:
        number /= 1000.0
    if not _EPOCH_MIN <= number <= _EPOCH_MAX:
        return None
    return datetime.fromtimestamp(number, UTC)


def _split_zone(text: str) -> tuple[str, str | None]:
    match = _ZONE_IN_PARENS.search(text)
    if match:
        return (text[: match.start()] + text[match.end() :]).strip(), match.group(1)
    match = _TRAILING_ZONE.search(text)
    if match:
        return text[: match.start()].strip(), match.group(1)
    return text, None


def _hour(match: re.Match[str]) -> tuple[int, int, int] | None:
    if match.group("noon"):
        return (12, 0, 0) if match.group("noon") == "noon" else (0, 0, 0)
    hour, minute = int(match.group("h")), int(match.group("mi") or 0)
    second = int(match.group("s") or 0)
    meridiem = (match.group("ap") or "").replace(".", "")
    if meridiem:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    elif match.group("mi") is None:
        return None  # a bare number is not a clock time
    if hour > 23 or minute > 59 or second > 59:
        return None
    return hour, minute, second


def _at(day: date, hms: tuple[int, int, int], zone: tzinfo) -> datetime:
    return datetime(day.year, day.month, day.day, *hms, tzinfo=zone)


def parse_clock(
    text: str, *, now: datetime, zone: tzinfo, zone_name: str | None = None
) -> datetime | None:
    """The next moment (UTC) a clock time names: "1pm (Europe/Lisbon)", "12:16 PM",
    "Apr 23 at 4pm", "Jul 9th, 2026 1:47 AM", "Mon 12:00am", "tomorrow at 3pm", or an ISO
    time. Without a date it is today, or tomorrow once today's has passed; a zone in the text
    (or `zone_name`) wins over `zone`."""
    raw = text.strip()[:_MAX_TEXT]
    try:
        iso = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        iso = None
    if iso is not None and iso.tzinfo is not None:
        return iso.astimezone(UTC)
    rest, named = _split_zone(raw)
    tz = zone_named(zone_name) or zone_named(named) or zone
    if iso is not None:
        return iso.replace(tzinfo=tz).astimezone(UTC)
    rest = rest.lower().rstrip(".!;")
    rest = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", rest)
    rest = re.sub(r"[,]|\b(?:at|on)\b", " ", rest)
    rest = re.sub(r"\s+", " ", rest).strip()
    match = _CLOCK.match(rest)
    if match is None:
        return None
    hms = _hour(match)
    if hms is None:
        return None
    local_now = now.astimezone(tz)
    floor = local_now - PAST_GRACE
    weekday, month = match.group("wd"), match.group("mon")
    if month is not None:
        if month not in _MONTHS:
            return None
        if weekday is not None and weekday not in _WEEKDAYS:
            return None
        year = int(match.group("year") or local_now.year)
        try:
            moment = _at(date(year, _MONTHS[month], int(match.group("day"))), hms, tz)
            if match.group("year") is None and moment < floor:
                moment = _at(date(year + 1, _MONTHS[month], int(match.group("day"))), hms, tz)
        except ValueError:
            return None
        return moment.astimezone(UTC)
    today = local_now.date()
    relative = match.group("rel") or match.group("rel2")
    if weekday is not None:
        if weekday not in _WEEKDAYS:
            return None
        ahead = (_WEEKDAYS[weekday] - today.weekday()) % 7
        moment = _at(today + timedelta(days=ahead), hms, tz)
        if moment < floor:
            moment = _at(today + timedelta(days=ahead + 7), hms, tz)
        return moment.astimezone(UTC)
    if relative == "tomorrow":
        return _at(today + timedelta(days=1), hms, tz).astimezone(UTC)
    moment = _at(today, hms, tz)
    if moment < floor and relative != "today":
        moment = _at(today + timedelta(days=1), hms, tz)
    return moment.astimezone(UTC)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", value):
        return float(value)
    return None


def _after(now: datetime, seconds: float) -> datetime:
    """`now` plus what a CLI printed, held to ten years: "99999999999999 seconds" would
    overflow a datetime (the wait itself is capped far lower, by the configuration)."""
    return now + timedelta(seconds=min(max(seconds, 0.0), _MAX_RESET_SECONDS))


def reset_moment(
    value: Any,
    kind: ResetKind,
    *,
    now: datetime,
    zone: tzinfo,
    zone_name: str | None = None,
) -> datetime | None:
    """The UTC moment a limit lifts, from a captured value of the given kind; None when the
    value does not read as that kind. `auto` tells epochs, seconds, durations and clock times
    apart by their shape."""
    if value is None:
        return None
    number = _number(value)
    if kind == "auto":
        if number is not None:
            kind = "epoch" if number >= 1e9 else "seconds"
        elif isinstance(value, str) and parse_duration(value) is not None:
            kind = "duration"
        else:
            kind = "clock"
    if kind == "seconds":
        if number is None:
            seconds = parse_duration(str(value)) if isinstance(value, str) else None
            if seconds is None:
                return None
            number = seconds
        return _after(now, number)
    if kind == "duration":
        seconds = number if number is not None else parse_duration(str(value))
        return None if seconds is None else _after(now, seconds)
    if kind == "epoch":
        return parse_epoch(value)
    if not isinstance(value, str):
        return None
    return parse_clock(value, now=now, zone=zone, zone_name=zone_name)
