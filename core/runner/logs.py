"""Sheet log files: capped writing while a sheet runs, bounded reading for the `logs` views.

A sheet that floods its output must not fill the disk (SPEC §8), and no reader may pull an
unbounded amount of a log into memory (SPEC §9 trap 12), so both directions are capped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# Upper bound for one read of a log file, whatever the caller asks for.
MAX_READ_BYTES = 4 * 1024 * 1024
_BLOCK = 64 * 1024


def truncation_marker(max_bytes: int) -> bytes:
    return f"\n[podium: log truncated at {max_bytes} bytes; further output discarded]\n".encode()


_TRUNCATED = re.compile(
    r"^\[podium: log truncated at (\d+) bytes; further output discarded\]$", re.M
)


def truncated_at(text: str) -> int | None:
    """The cap a log's text says the log was cut at (`truncation_marker`), when it was."""
    found = _TRUNCATED.search(text)
    return int(found.group(1)) if found else None


class CappedLog:
    """Append-only log that stops storing output after `max_bytes` (but keeps counting it)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.path = path
        self.max_bytes = max_bytes
        self.total_bytes = 0
        self.truncated = False
        self.write_error: str | None = None
        self._written = 0
        # Unbuffered, so a concurrent tail reader sees output as soon as the sheet produced it.
        # The directory is made only when missing: a job's sheets share it, and trying to make
        # it at every start costs more than the open.
        try:
            self._file = open(path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "wb", buffering=0)  # noqa: SIM115 - closed in close()

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.total_bytes += len(data)
        if self.truncated or self.write_error is not None or self._file.closed:
            return
        try:
            room = self.max_bytes - self._written
            if len(data) <= room:
                self._write_all(data)
                self._written += len(data)
                return
            if room > 0:
                self._write_all(data[:room])
                self._written += room
            self._write_all(truncation_marker(self.max_bytes))
            self.truncated = True
        except OSError as exc:
            # E.g. a full disk: the sheet must keep running (its pipes keep being drained),
            # so remember the failure for the outcome and stop logging.
            self.write_error = f"log write failed: {exc.strerror or exc}"

    def _write_all(self, data: bytes) -> None:
        # A raw FileIO write may be partial; loop so nothing is silently dropped.
        view = memoryview(data)
        while view:
            n = self._file.write(view)
            if n is None or n <= 0:
                raise OSError("short write to log file")
            view = view[n:]

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> CappedLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _skip_partial_utf8_start(data: bytes | bytearray) -> int:
    """Index of the first byte that is not a UTF-8 continuation byte (at most 3 skipped)."""
    i = 0
    while i < min(3, len(data)) and 0x80 <= data[i] <= 0xBF:
        i += 1
    return i


class TailBuffer:
    """Keeps the last `limit` bytes written to it."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("limit must be > 0")
        self.limit = limit
        self._buf = bytearray()
        self._trimmed = False
        self._writes = 0
        # Every byte ever written, kept or not: how much was cut off the front.
        self.written = 0
        # (writes, max_bytes, text) of the last `recent_text`: views of a job read every
        # running sheet's tail on each call, while most sheets printed nothing since.
        self._recent: tuple[int, int, str] | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._writes += 1
        self.written += len(data)
        if len(data) >= self.limit:
            self._buf = bytearray(data[-self.limit :])
            self._trimmed = True
            return
        self._buf += data
        excess = len(self._buf) - self.limit
        if excess > 0:
            del self._buf[:excess]
            self._trimmed = True

    def bytes(self) -> bytes:
        return bytes(self._buf)

    def text(self) -> str:
        # Trimming may have cut a multi-byte character in half; drop its orphaned tail bytes
        # rather than showing a replacement character at the start.
        start = _skip_partial_utf8_start(self._buf) if self._trimmed else 0
        return tail_text(self._buf[start:])

    def recent_text(self, max_bytes: int) -> str:
        """At most the last `max_bytes` of what was written so far, as text that neither
        starts nor ends inside a character: a chunk read from a pipe may end in the middle
        of one, whose rest is still on its way."""
        cached = self._recent
        if cached is not None and cached[0] == self._writes and cached[1] == max_bytes:
            return cached[2]
        cut = len(self._buf) > max_bytes
        data = bytes(self._buf[-max_bytes:]) if cut else bytes(self._buf)
        start = _skip_partial_utf8_start(data) if cut or self._trimmed else 0
        end = len(data) - _incomplete_utf8_suffix(data)
        text = tail_text(data[start : max(start, end)])
        self._recent = (self._writes, max_bytes, text)
        return text


def tail_text(data: bytes | bytearray) -> str:
    """A tail as the store keeps it (see store.codec.without_nul): NUL as U+FFFD, so the
    running view and a fresh read agree; the log keeps the bytes."""
    text = data.decode("utf-8", errors="replace")
    return text.replace("\0", "\ufffd") if "\0" in text else text


def _incomplete_utf8_suffix(data: bytes) -> int:
    """Number of trailing bytes that start a UTF-8 character the data does not complete."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return 0
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return back if back < need else 0
    return 0


def read_log_tail(path: Path, tail_lines: int, max_bytes: int = MAX_READ_BYTES) -> str:
    """The last `tail_lines` lines of a log, and at most `max_bytes` of them (a log that is
    one long line is cut at its start), reading at most that much from its end.

    Raises OSError (FileNotFoundError) when the log does not exist.
    """
    if tail_lines <= 0:
        return ""
    cap = max(0, min(max_bytes, MAX_READ_BYTES))
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        chunks: list[bytes] = []
        newlines = 0
        # Read backwards in blocks until there are enough lines (one extra newline so the
        # first kept line is complete) or the read cap is reached.
        while pos > 0 and newlines <= tail_lines and end - pos < cap:
            size = min(_BLOCK, pos, cap - (end - pos))
            pos -= size
            f.seek(pos)
            block = f.read(size)
            chunks.append(block)
            newlines += block.count(b"\n")
    data = b"".join(reversed(chunks))
    if pos > 0:
        data = data[_skip_partial_utf8_start(data) :]  # never start inside a character
    lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
    if pos > 0 and len(lines) > 1 and (len(lines) > tail_lines or end - pos >= cap):
        # The first line starts mid-line (we did not read from the file start): never show it
        # unless it is all we have.
        lines = lines[1:]
    return "".join(lines[-tail_lines:])


def read_output_tail(path: str | None, max_bytes: int) -> str | None:
    """The last `max_bytes` of a log as text that does not start inside a character, or
    None when it holds nothing or cannot be read here (a log on another conductor's host)."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            start = max(0, end - max(0, min(max_bytes, MAX_READ_BYTES)))
            f.seek(start)
            data = f.read(end - start)
    except OSError:
        return None
    if start > 0:
        data = data[_skip_partial_utf8_start(data) :]
    return tail_text(data) or None


def read_log_range(path: Path, offset: int, max_bytes: int) -> tuple[str, int, bool]:
    """Read from byte `offset`: returns (text, next_offset, more_available).

    At most min(max_bytes, MAX_READ_BYTES) bytes are read. A multi-byte character cut by the
    limit is left for the next read, so following a log chunk by chunk never splits one.
    Raises OSError (FileNotFoundError) when the log does not exist.
    """
    offset = max(0, offset)
    limit = max(0, min(max_bytes, MAX_READ_BYTES))
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if offset >= size:
            return "", size, False
        f.seek(offset)
        data = f.read(limit)
    next_offset = offset + len(data)
    if next_offset < size:
        cut = _incomplete_utf8_suffix(data)
        if 0 < cut < len(data):
            data = data[:-cut]
            next_offset -= cut
    return data.decode("utf-8", errors="replace"), next_offset, next_offset < size
