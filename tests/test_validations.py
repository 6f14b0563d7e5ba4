"""Validations: every type passing and failing, and path confinement to the workspace."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from podium.core.errors import PathNotAllowedError
from podium.core.models import ValidationResult
from podium.core.runner.validations import (
    MAX_CONTENT_BYTES,
    resolve_in_workspace,
    run_validation,
    run_validations,
)

pytestmark = pytest.mark.timeout(60)

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return workspace


def alive(pid: int) -> bool:
    # Zombies count as gone: the sandbox's init may be slow to reap orphans.
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def v(type_: str, **fields: Any) -> SimpleNamespace:
    return SimpleNamespace(type=type_, **fields)


async def check(ws: Path, validation: Any, started_ns: int = 0) -> ValidationResult:
    return await run_validation(
        validation,
        workspace=ws,
        attempt_started_at_ns=started_ns,
        env=ENV,
        kill_grace_seconds=0.5,
    )


# --- path confinement -----------------------------------------------------------------------


def test_resolve_in_workspace_allows_inside(ws: Path) -> None:
    (ws / "sub").mkdir()
    (ws / "sub" / "f.txt").write_text("x")
    (ws / "link").symlink_to(ws / "sub")
    real_ws = Path(os.path.realpath(ws))
    assert resolve_in_workspace(ws, "sub/f.txt") == real_ws / "sub" / "f.txt"
    assert resolve_in_workspace(ws, "sub/../sub/f.txt") == real_ws / "sub" / "f.txt"
    assert resolve_in_workspace(ws, str(ws / "sub" / "f.txt")) == real_ws / "sub" / "f.txt"
    assert resolve_in_workspace(ws, "link/f.txt") == real_ws / "sub" / "f.txt"
    assert resolve_in_workspace(ws, "not-yet.txt") == real_ws / "not-yet.txt"


def test_resolve_in_workspace_refuses_escapes(ws: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (ws / "escape").symlink_to(outside)
    (ws / "dir-escape").symlink_to(tmp_path)
    with pytest.raises(PathNotAllowedError, match="escapes the workspace"):
        resolve_in_workspace(ws, "../outside.txt")
    with pytest.raises(PathNotAllowedError, match="outside the workspace"):
        resolve_in_workspace(ws, str(outside))
    with pytest.raises(PathNotAllowedError, match="symlink"):
        resolve_in_workspace(ws, "escape")
    with pytest.raises(PathNotAllowedError, match="symlink"):
        resolve_in_workspace(ws, "dir-escape/outside.txt")
    # A sibling whose name merely starts with the workspace's name is still outside.
    (tmp_path / "ws2").mkdir()
    with pytest.raises(PathNotAllowedError):
        resolve_in_workspace(ws, str(tmp_path / "ws2"))
    with pytest.raises(PathNotAllowedError):
        resolve_in_workspace(ws, "a\0b")


@pytest.mark.anyio
async def test_escaping_paths_fail_validations_with_reason(ws: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (ws / "escape").symlink_to(outside)
    for path in ("../outside.txt", str(outside), "escape"):
        for validation in (
            v("file_exists", path=path),
            v("file_modified", path=path),
            v("content_contains", path=path, pattern="secret"),
            v("content_regex", path=path, pattern="secret"),
        ):
            result = await check(ws, validation)
            assert not result.passed, (path, validation)
            assert result.detail is not None
            assert "outside" in result.detail or "escapes" in result.detail


# --- file checks ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_file_exists(ws: Path) -> None:
    (ws / "count.txt").write_text("1")
    ok = await check(ws, v("file_exists", path="count.txt"))
    assert ok == ValidationResult(type="file_exists", passed=True, detail=None)
    missing = await check(ws, v("file_exists", path="nope.txt"))
    assert not missing.passed
    assert missing.detail == "file 'nope.txt' does not exist"


@pytest.mark.anyio
async def test_file_modified(ws: Path) -> None:
    old = ws / "old.txt"
    old.write_text("x")
    an_hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(old, ns=(an_hour_ago, an_hour_ago))
    started = time.time_ns()
    (ws / "new.txt").write_text("y")

    result = await check(ws, v("file_modified", path="old.txt"), started)
    assert not result.passed
    assert result.detail == "file 'old.txt' was not modified during this attempt"
    result = await check(ws, v("file_modified", path="new.txt"), started)
    assert result.passed
    result = await check(ws, v("file_modified", path="gone.txt"), started)
    assert not result.passed and result.detail == "file 'gone.txt' does not exist"


@pytest.mark.anyio
async def test_content_contains(ws: Path) -> None:
    (ws / "out.txt").write_text("hello world\n")
    assert (await check(ws, v("content_contains", path="out.txt", pattern="lo wo"))).passed
    result = await check(ws, v("content_contains", path="out.txt", pattern="^hello"))
    assert not result.passed  # plain substring, not a regex
    assert result.detail == "pattern '^hello' not found in 'out.txt'"
    result = await check(ws, v("content_contains", path="none.txt", pattern="x"))
    assert not result.passed and result.detail == "file 'none.txt' does not exist"
    (ws / "d").mkdir()
    result = await check(ws, v("content_contains", path="d", pattern="x"))
    assert not result.passed and result.detail is not None and "directory" in result.detail


@pytest.mark.anyio
async def test_content_regex(ws: Path) -> None:
    (ws / "count.txt").write_text("total:\n42\n")
    ok = await check(ws, v("content_regex", path="count.txt", pattern="^[0-9]+$"))
    assert ok.passed  # MULTILINE: ^ and $ match at line boundaries
    result = await check(ws, v("content_regex", path="count.txt", pattern="^[a-z]+$"))
    assert not result.passed
    assert result.detail == "pattern '^[a-z]+$' not found in 'count.txt'"
    bad = await check(ws, v("content_regex", path="count.txt", pattern="(unclosed"))
    assert not bad.passed and bad.detail is not None and "invalid regex" in bad.detail
    # Patterns `re` refuses with other errors than re.error ended the attempt as an
    # internal error; a templated pattern is known only here.
    for pattern, why in (
        ("a{99999999999}", "the repetition number is too large"),
        ("(?:" * 1000 + ")" * 1000, "nested too deeply"),
    ):
        bad = await check(ws, v("content_regex", path="count.txt", pattern=pattern))
        assert not bad.passed and bad.detail is not None, pattern
        assert "invalid regex" in bad.detail and why in bad.detail, bad.detail


def write_sparse(path: Path, hole: int, tail: bytes) -> None:
    with open(path, "wb") as f:
        f.seek(hole)
        f.write(tail)


@pytest.mark.anyio
async def test_content_reads_at_most_16_mib(ws: Path) -> None:
    # The needle sits just past the readable window.
    write_sparse(ws / "big.bin", MAX_CONTENT_BYTES, b"needle")
    result = await check(ws, v("content_contains", path="big.bin", pattern="needle"))
    assert not result.passed
    assert result.detail is not None and "first 16 MiB" in result.detail


# --- command_succeeds -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_command_succeeds_pass_and_fail(ws: Path) -> None:
    (ws / "marker").write_text("")
    ok = await check(ws, v("command_succeeds", command="test -f marker", timeout_seconds=10))
    assert ok.passed and ok.detail is None
    failed = await check(
        ws, v("command_succeeds", command="echo boom; echo bad >&2; exit 3", timeout_seconds=10)
    )
    assert not failed.passed
    assert failed.detail == "command exited 3: boom\nbad"
    quiet = await check(ws, v("command_succeeds", command="exit 1", timeout_seconds=10))
    assert quiet.detail == "command exited 1 (no output)"


@pytest.mark.anyio
async def test_command_output_excerpt_is_short(ws: Path) -> None:
    result = await check(
        ws,
        v(
            "command_succeeds",
            command="head -c 200000 /dev/zero | tr '\\0' a; exit 2",
            timeout_seconds=10,
        ),
    )
    assert not result.passed and result.detail is not None
    assert result.detail.startswith("command exited 2: aaa")
    assert len(result.detail) < 600


@pytest.mark.anyio
async def test_command_env_cwd_and_stdin(ws: Path) -> None:
    env_check = v(
        "command_succeeds",
        command='test "$PWD" = "$(pwd -P)" && test -z "${HOME-}" && cat && '
        'test "$(readlink /proc/$$/fd/0)" = /dev/null',
        timeout_seconds=10,
    )
    result = await check(ws, env_check)
    assert result.passed, result.detail
    assert Path(os.getcwd()) != ws


@pytest.mark.anyio
async def test_command_timeout_kills_group(ws: Path) -> None:
    start = time.monotonic()
    result = await check(
        ws,
        v(
            "command_succeeds",
            command="sleep 1000 & echo $! > gc.pid; sleep 1000",
            timeout_seconds=0.5,
        ),
    )
    assert not result.passed
    assert result.detail is not None and result.detail.startswith("command timed out after 0.5s")
    assert time.monotonic() - start < 3
    assert not alive(int((ws / "gc.pid").read_text()))


@pytest.mark.anyio
async def test_command_killed_by_signal(ws: Path) -> None:
    result = await check(ws, v("command_succeeds", command="kill -KILL $$", timeout_seconds=10))
    assert not result.passed
    assert result.detail == "command killed by signal 9 (SIGKILL) (no output)"


# --- running several ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_run_validations_runs_all_in_order(ws: Path) -> None:
    (ws / "a.txt").write_text("alpha")
    results = await run_validations(
        [
            v("file_exists", path="missing.txt"),
            v("content_contains", path="a.txt", pattern="alpha"),
            v("no_such_type"),
            v("command_succeeds", command="true", timeout_seconds=5),
        ],
        workspace=ws,
        attempt_started_at_ns=0,
        env=ENV,
        kill_grace_seconds=0.5,
    )
    assert [(r.type, r.passed) for r in results] == [
        ("file_exists", False),
        ("content_contains", True),
        ("no_such_type", False),
        ("command_succeeds", True),
    ]
    assert results[2].detail == "unknown validation type 'no_such_type'"
