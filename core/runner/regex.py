"""Validation regexes, bounded in time.

A `content_regex` pattern comes from a spec, so it is untrusted: Python's `re` backtracks
(`^(a+)+$` over 28 `a`s and a `!` takes minutes) and holds the GIL while it does, which
froze every client of the conductor. So a pattern never runs on `re` inside the conductor:

- RE2 (linear time, and it lets go of the GIL) runs it when it means there exactly what it
  means to Python: pattern and text are ASCII, and RE2 accepts the pattern's syntax;
- anything else (backreferences, lookaround, `\\Z`, non-ASCII text...) runs on Python's `re`
  in a child process that is killed at REGEX_TIME_LIMIT_SECONDS, which fails the validation
  with a detail saying so. Those children run at a lower priority and only a few at a time
  (half the CPUs), so a spec full of such patterns leaves the conductor its share.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import weakref
from dataclasses import dataclass
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
    loop = asyncio.get_running_loop()
    searches = _searches.get(loop)
    if searches is None:
        searches = _searches[loop] = anyio.Semaphore(MAX_BOUNDED_SEARCHES)
    async with searches:
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
