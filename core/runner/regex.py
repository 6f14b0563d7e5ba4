"""Untrusted regexes, bounded in time: validation patterns and instrument profiles' failure
patterns.

A `content_regex` pattern comes from a spec, and a profile's `patterns` from a user's YAML,
so neither is trusted: Python's `re` backtracks
(`^(a+)+$` over 28 `a`s and a `!` takes minutes) and holds the GIL while it does, which
froze every client of the conductor. So a pattern never runs on `re` inside the conductor:

- RE2 (linear time, and it lets go of the GIL) runs it when it means there exactly what it
  means to Python: pattern and text are ASCII, and RE2 accepts the pattern's syntax;
- anything else (backreferences, lookaround, `\\Z`, non-ASCII text...) runs on Python's `re`
  in a child process that is killed at REGEX_TIME_LIMIT_SECONDS, which fails the validation
  with a detail saying so (a profile's patterns share one such child per failed run). Those
  children run at a lower priority and only a few at a time
  (half the CPUs), so a spec full of such patterns leaves the conductor its share.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import re2

from podium.core.runner.process import run_captured

# Wall-clock bound for a pattern that RE2 cannot run; read at call time (tests lower it).
REGEX_TIME_LIMIT_SECONDS = 10.0
# Such searches run a few at a time: each may burn a CPU until its limit, and a spec full of
# them must not take every core from the conductor (and the sheets) meanwhile.
MAX_BOUNDED_SEARCHES = max(1, (os.cpu_count() or 2) // 2)
# One semaphore per event loop (a semaphore belongs to the loop it first waited in).
_searches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.Semaphore] = (
    weakref.WeakKeyDictionary()
)

# Python's ASCII `\s` also matches \v and \x1c-\x1f, RE2's does not; `[:` starts a POSIX class
# in RE2 but is a plain set member to Python; `\Z` is RE2's `\z`; inline flags other than
# i/m/s mean something else (or nothing) to RE2.
_RE2_DIFFERS_ON_TEXT = re.compile(rb"[\x0b\x1c-\x1f]")
_RE2_DIFFERS_IN_PATTERN = re.compile(r"\[:|\\Z|\(\?[a-zA-Z]*[auLx]")


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # it would print every refused pattern on stderr
    return options


_OPTIONS = _re2_options()


@dataclass(frozen=True)
class RegexOutcome:
    found: bool
    error: str | None = None  # the pattern could not run to an answer (why)


def _bounded_slot() -> anyio.Semaphore:
    loop = asyncio.get_running_loop()
    searches = _searches.get(loop)
    if searches is None:
        searches = _searches[loop] = anyio.Semaphore(MAX_BOUNDED_SEARCHES)
    return searches


def search_re2(pattern: str, data: bytes) -> RegexOutcome | None:
    """Search with RE2 when it would answer exactly as Python's `re.search(pattern, text,
    re.MULTILINE)`; None when it cannot (the caller falls back to `search_bounded`)."""
    if not (pattern.isascii() and data.isascii()):
        return None
    if _RE2_DIFFERS_IN_PATTERN.search(pattern) or _RE2_DIFFERS_ON_TEXT.search(data):
        return None
    try:
        compiled = re2.compile(("(?m)" + pattern).encode(), _OPTIONS)
    except re2.error:
        return None  # syntax RE2 lacks (backreferences, lookaround, repeats over 1000)
    return RegexOutcome(found=compiled.search(data) is not None)


# Run by `python -I -S`: reads the capped file itself, so the text never crosses a pipe. It
# lowers its own priority first: a pattern that backtracks burns a CPU until the limit, and
# the conductor's answers to every other client come before it.
_CHILD = """
import os, re, sys
try:
    os.nice(10)
except OSError:
    pass
pattern = bytes.fromhex(sys.argv[1]).decode("utf-8", "surrogatepass")
with open(sys.argv[2], "rb") as f:
    text = f.read(int(sys.argv[3])).decode("utf-8", errors="replace")
try:
    compiled = re.compile(pattern, re.MULTILINE)
except re.error as exc:
    sys.stderr.write(str(exc))
    sys.exit(3)
sys.exit(0 if compiled.search(text) is not None else 1)
"""


async def search_bounded(
    pattern: str, path: Path, *, max_bytes: int, kill_grace_seconds: float
) -> RegexOutcome:
    """Python's `re.search` over the first `max_bytes` of `path`, in a child process killed
    after REGEX_TIME_LIMIT_SECONDS."""
    limit = REGEX_TIME_LIMIT_SECONDS
    argv = [
        sys.executable,
        "-I",
        "-S",
        "-c",
        _CHILD,
        pattern.encode("utf-8", "surrogatepass").hex(),
        os.fspath(path),
        str(max_bytes),
    ]
    async with _bounded_slot():
        outcome, output = await run_captured(
            argv,
            cwd=path.parent,
            env={},
            timeout_seconds=limit,
            kill_grace_seconds=min(kill_grace_seconds, 1.0),
            capture_bytes=2048,
        )
    if outcome.timed_out:
        return RegexOutcome(
            found=False,
            error=f"the pattern ran past the {limit:g} s limit for regular expressions "
            "(catastrophic backtracking?); RE2 syntax runs in linear time",
        )
    if outcome.exit_code in (0, 1):
        return RegexOutcome(found=outcome.exit_code == 0)
    if outcome.exit_code == 3:
        return RegexOutcome(found=False, error=f"invalid regex: {output.strip()}")
    why = outcome.spawn_error or output.strip()[-200:] or f"exit {outcome.exit_code}"
    return RegexOutcome(found=False, error=f"the regex search failed: {why}")


# --- failure patterns: many patterns over one text, with what they matched ----------------

# A match's text and groups are kept this long: an excerpt and a reset time need far less,
# and a `.*` over the whole text must not come back whole.
MATCH_CHARS = 1000


@dataclass(frozen=True)
class PatternMatch:
    text: str  # what the whole pattern matched
    groups: dict[str, str | None] = field(default_factory=dict)  # its named groups


@dataclass(frozen=True)
class PatternOutcome:
    match: PatternMatch | None = None
    error: str | None = None  # the pattern could not run to an answer (why)


def _cut(value: str | None) -> str | None:
    return None if value is None else value[:MATCH_CHARS]


def _re2_match(pattern: str, data: bytes) -> PatternOutcome | None:
    """`re.search(pattern, text, re.IGNORECASE | re.MULTILINE)` by RE2 when the two would
    answer alike (see `search_re2`); None when the pattern needs the bounded child."""
    if not (pattern.isascii() and data.isascii()):
        return None
    if _RE2_DIFFERS_IN_PATTERN.search(pattern) or _RE2_DIFFERS_ON_TEXT.search(data):
        return None
    try:
        compiled = re2.compile(("(?im)" + pattern).encode(), _OPTIONS)
    except re2.error:
        return None
    found = compiled.search(data)
    if found is None:
        return PatternOutcome()
    groups = {
        name.decode(): None if value is None else _cut(value.decode())
        for name, value in found.groupdict().items()
    }
    return PatternOutcome(PatternMatch(_cut(found.group(0).decode()) or "", groups))


def _re2_all(patterns: Sequence[str], text: str) -> list[PatternOutcome | None]:
    data = text.encode("utf-8", "surrogatepass")
    return [_re2_match(pattern, data) for pattern in patterns]


# Reads the patterns (a JSON line) and then the text from stdin, and prints one JSON line per
# pattern as it is answered, so a pattern that runs past the limit leaves the answers of the
# ones before it.
_PATTERNS_CHILD = """
import json, os, re, sys
try:
    os.nice(10)
except OSError:
    pass
data = sys.stdin.buffer.read()
head, _, body = data.partition(b"\\n")
patterns = json.loads(head)
text = body.decode("utf-8", errors="replace")
limit = int(sys.argv[1])
cut = lambda v: None if v is None else v[:limit]
for index, pattern in enumerate(patterns):
    try:
        found = re.compile(pattern, re.IGNORECASE | re.MULTILINE).search(text)
    except re.error as exc:
        answer = {"i": index, "error": "invalid regex: " + str(exc)}
    else:
        answer = {"i": index}
        if found is not None:
            groups = {k: cut(v) for k, v in found.groupdict().items()}
            answer["match"] = [cut(found.group(0)), groups]
    sys.stdout.write(json.dumps(answer) + "\\n")
    sys.stdout.flush()
"""


def _child_answers(output: str, count: int) -> dict[int, PatternOutcome]:
    answers: dict[int, PatternOutcome] = {}
    for line in output.splitlines():
        try:
            answer = json.loads(line)
            index = answer["i"]
        except (ValueError, TypeError, KeyError):
            continue  # not one of its answers (a warning on stderr)
        if not isinstance(index, int) or not 0 <= index < count:
            continue
        if "error" in answer:
            answers[index] = PatternOutcome(error=str(answer["error"]))
        elif "match" in answer:
            text, groups = answer["match"]
            answers[index] = PatternOutcome(PatternMatch(text, groups))
        else:
            answers[index] = PatternOutcome()
    return answers


def _answers_bytes(patterns: Sequence[str]) -> int:
    """Room for every answer the child may print (the capture keeps the end, so a cut would
    lose the first ones): each match and named group cut to MATCH_CHARS, at most 6 bytes
    a character once JSON escapes it."""
    values = 0
    for pattern in patterns:
        try:
            # Compiling only (load did it already, and `re` caches it): matching backtracks.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values += 1 + len(re.compile(pattern).groupindex)
        except re.error:
            values += 1  # answered with its error
    return values * (MATCH_CHARS * 6 + 64) + len(patterns) * 64 + 4096


async def _search_in_child(
    patterns: Sequence[str], text: str, *, kill_grace_seconds: float
) -> list[PatternOutcome]:
    limit = REGEX_TIME_LIMIT_SECONDS
    stdin = json.dumps(list(patterns)).encode() + b"\n" + text.encode("utf-8", "surrogatepass")
    async with _bounded_slot():
        outcome, output = await run_captured(
            [sys.executable, "-I", "-S", "-c", _PATTERNS_CHILD, str(MATCH_CHARS)],
            cwd=Path(sys.executable).parent,
            env={},
            timeout_seconds=limit,
            kill_grace_seconds=min(kill_grace_seconds, 1.0),
            capture_bytes=_answers_bytes(patterns),
            stdin_data=stdin,
        )
    answers = _child_answers(output, len(patterns))
    if len(answers) == len(patterns):
        return [answers[i] for i in range(len(patterns))]
    if outcome.timed_out:
        why = (
            f"ran past the {limit:g} s limit for regular expressions (catastrophic "
            "backtracking?); RE2 syntax runs in linear time"
        )
    else:
        tail = output.strip()[-200:]
        why = f"the regex search failed: {outcome.spawn_error or tail or outcome.exit_code}"
    stuck = min(set(range(len(patterns))) - set(answers))
    results = []
    for index in range(len(patterns)):
        if index in answers:
            results.append(answers[index])
        elif index == stuck:
            results.append(PatternOutcome(error=why))
        else:
            results.append(PatternOutcome(error="not searched: an earlier pattern " + why))
    return results


async def search_patterns(
    patterns: Sequence[str], text: str, *, kill_grace_seconds: float
) -> list[PatternOutcome]:
    """Each pattern's first match in `text`, as `re.search(pattern, text, re.IGNORECASE |
    re.MULTILINE)` finds it, never on Python's `re` in this process: RE2 (in a worker
    thread) where it answers alike, else one child for the rest, killed at
    REGEX_TIME_LIMIT_SECONDS. A pattern that could not be answered has an `error`."""
    if not patterns:
        return []
    fast = await anyio.to_thread.run_sync(_re2_all, list(patterns), text)
    rest = [i for i, outcome in enumerate(fast) if outcome is None]
    slow: list[PatternOutcome] = []
    if rest:
        slow = await _search_in_child(
            [patterns[i] for i in rest], text, kill_grace_seconds=kill_grace_seconds
        )
    by_index = dict(zip(rest, slow, strict=True))
    return [outcome if outcome is not None else by_index[i] for i, outcome in enumerate(fast)]
