"""Reset times as AI CLIs print them, read against a frozen clock (zones, "tomorrow", dates,
weekdays, epochs, durations)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from podium.core.instruments.resets import (
    local_zone,
    parse_clock,
    parse_duration,
    parse_epoch,
    reset_moment,
)

LISBON = ZoneInfo("Europe/Lisbon")
NEW_YORK = ZoneInfo("America/New_York")
# Tuesday 10 March 2026, 10:30 UTC: Lisbon is on WET (UTC+0), New York already on EDT (UTC-4).
NOW = datetime(2026, 3, 10, 10, 30, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2 days 17 hours 14 minutes", 2 * 86400 + 17 * 3600 + 14 * 60),
        ("5 days 22 hours 11 minutes", 5 * 86400 + 22 * 3600 + 11 * 60),
        ("1h49m8s", 3600 + 49 * 60 + 8),
        ("15.0s", 15.0),
        ("5s", 5.0),
        ("2.004s", 2.004),
        ("in 1d 5h", 86400 + 5 * 3600),
        ("1 hour and 5 minutes", 3900.0),
        ("30 seconds.", 30.0),
        ("after 90 min", 5400.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1pm", "12:16 PM", "5 months", "soon", "15", "2 days ago x"])
def test_not_durations(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        # Later today, in the zone the text names.
        ("1pm (Europe/Lisbon)", NEW_YORK, utc(2026, 3, 10, 13, 0)),
        ("1:10am (Europe/Moscow)", LISBON, utc(2026, 3, 10, 22, 10)),
        # Already past today: the next such moment is tomorrow.
        ("10am (Europe/Lisbon)", NEW_YORK, utc(2026, 3, 11, 10, 0)),
        # No zone in the text: the default zone (where the CLI printed it).
        ("12:16 PM", NEW_YORK, utc(2026, 3, 10, 16, 16)),
        ("6:05 AM", NEW_YORK, utc(2026, 3, 11, 10, 5)),
        ("21:55", LISBON, utc(2026, 3, 10, 21, 55)),
        ("3pm UTC", NEW_YORK, utc(2026, 3, 10, 15, 0)),
        ("noon", LISBON, utc(2026, 3, 10, 12, 0)),
        ("12am", LISBON, utc(2026, 3, 11, 0, 0)),
        ("tomorrow at 3pm", LISBON, utc(2026, 3, 11, 15, 0)),
        # Dates: this year, or next year once this year's has passed.
        ("Apr 23 at 4pm (America/New_York)", LISBON, utc(2026, 4, 23, 20, 0)),
        ("Sep 24 at 3pm (Australia/Brisbane)", LISBON, utc(2026, 9, 24, 5, 0)),
        ("Jan 12, 10:59am (America/New_York)", LISBON, utc(2027, 1, 12, 15, 59)),
        ("Jul 9th, 2026 1:47 AM", NEW_YORK, utc(2026, 7, 9, 5, 47)),
        ("Aug 10, 2026, 11:12 AM", NEW_YORK, utc(2026, 8, 10, 15, 12)),
        ("Sep 1st, 2026 3:14 PM", LISBON, utc(2026, 9, 1, 14, 14)),
        # Weekdays: the next one (today counts while its time is ahead).
        ("Mon 12:00am", LISBON, utc(2026, 3, 16, 0, 0)),
        ("Tue 4:00 PM", LISBON, utc(2026, 3, 10, 16, 0)),
        ("Tue 9:00 AM", LISBON, utc(2026, 3, 17, 9, 0)),
        ("Fri 4:00 PM", NEW_YORK, utc(2026, 3, 13, 20, 0)),
        # ISO times.
        ("2026-07-07T12:25:00Z", LISBON, utc(2026, 7, 7, 12, 25)),
    ],
)
def test_clock_times_are_the_next_such_moment(
    text: str, zone: ZoneInfo, expected: datetime
) -> None:
    assert parse_clock(text, now=NOW, zone=zone) == expected


def test_a_moment_just_past_is_now_not_tomorrow() -> None:
    # Printed at 12:59:58, read at 13:01: the limit lifted a minute ago, not in 24 hours.
    now = utc(2026, 3, 10, 13, 1)
    assert parse_clock("1pm (Europe/Lisbon)", now=now, zone=UTC) == utc(2026, 3, 10, 13, 0)


def test_next_such_moment_crosses_a_dst_change() -> None:
    # 28 March 2026 22:00 UTC; Lisbon moves to UTC+1 at 01:00 UTC on the 29th.
    now = utc(2026, 3, 28, 22, 0)
    assert parse_clock("9am (Europe/Lisbon)", now=now, zone=UTC) == utc(2026, 3, 29, 8, 0)


def test_an_explicit_zone_name_wins_and_an_unknown_one_falls_back() -> None:
    assert parse_clock("1pm", now=NOW, zone=UTC, zone_name="Europe/Lisbon") == utc(2026, 3, 10, 13)
    assert parse_clock("1pm (Mars/Olympus)", now=NOW, zone=NEW_YORK) == utc(2026, 3, 10, 17)


@pytest.mark.parametrize(
    ("text", "zone_name", "expected"),
    [
        # Abbreviations name a fixed offset, whatever the machine's zone (New York here).
        ("1pm (PST)", None, utc(2026, 3, 10, 21)),
        ("1pm PST", None, utc(2026, 3, 10, 21)),
        ("1pm", "pdt", utc(2026, 3, 10, 20)),
        ("4pm CEST", None, utc(2026, 3, 10, 14)),
        ("11:30 AM JST", None, utc(2026, 3, 11, 2, 30)),  # 02:30 UTC tomorrow: past there
        # Offsets from UTC, in parentheses or trailing, with or without minutes.
        ("4pm UTC+2", None, utc(2026, 3, 10, 14)),
        ("9pm (UTC+05:30)", None, utc(2026, 3, 10, 15, 30)),
        ("noon GMT-3", None, utc(2026, 3, 10, 15)),
        # "p.m." whose full stop ended the sentence.
        ("3:05 p.m", None, utc(2026, 3, 10, 19, 5)),
        ("3:05 p.m.", None, utc(2026, 3, 10, 19, 5)),
    ],
)
def test_zone_abbreviations_and_offsets(
    text: str, zone_name: str | None, expected: datetime
) -> None:
    assert parse_clock(text, now=NOW, zone=NEW_YORK, zone_name=zone_name) == expected


def test_ambiguous_abbreviations_fall_back_like_unknown_zones() -> None:
    # CST is China's and the US Central's; IST is India's, Ireland's and Israel's.
    for text in ("1pm (CST)", "1pm (IST)"):
        assert parse_clock(text, now=NOW, zone=NEW_YORK) == utc(2026, 3, 10, 17)


@pytest.mark.parametrize("text", ["soon", "later", "13pm", "25:00", "Foo 12 at 3pm", "5", ""])
def test_not_clock_times(text: str) -> None:
    assert parse_clock(text, now=NOW, zone=UTC) is None


def test_epochs() -> None:
    assert parse_epoch(1750708800) == utc(2025, 6, 23, 20, 0)
    assert parse_epoch("1750708800") == utc(2025, 6, 23, 20, 0)
    assert parse_epoch(1750708800000) == utc(2025, 6, 23, 20, 0)  # milliseconds
    assert parse_epoch(42) is None
    assert parse_epoch("soon") is None


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (13872, "seconds", NOW + timedelta(seconds=13872)),
        ("37.5", "seconds", NOW + timedelta(seconds=37.5)),
        ("15.0s", "seconds", NOW + timedelta(seconds=15)),
        ("1h49m8s", "duration", NOW + timedelta(seconds=6548)),
        (1778565600, "epoch", utc(2026, 5, 12, 6, 0)),
        ("1pm (Europe/Lisbon)", "clock", utc(2026, 3, 10, 13, 0)),
        # auto: told apart by shape
        ("1778565600", "auto", utc(2026, 5, 12, 6, 0)),
        ("120", "auto", NOW + timedelta(seconds=120)),
        ("in 1d 5h", "auto", NOW + timedelta(hours=29)),
        ("Mon 12:00am", "auto", utc(2026, 3, 16, 0, 0)),
        (-5, "seconds", NOW),
    ],
)
def test_reset_moment(value: object, kind: str, expected: datetime) -> None:
    assert reset_moment(value, kind, now=NOW, zone=LISBON) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "kind"), [(None, "auto"), ("soon", "clock"), ("soon", "duration"), (True, "seconds")]
)
def test_reset_moment_unreadable(value: object, kind: str) -> None:
    assert reset_moment(value, kind, now=NOW, zone=LISBON) is None  # type: ignore[arg-type]


def test_local_zone_follows_tz(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert local_zone() == ZoneInfo("Asia/Tokyo")
