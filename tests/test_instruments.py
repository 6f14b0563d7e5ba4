"""Built-in instrument profiles (SPEC §5): loading, exact command lines, prompt delivery,
user overrides, and failure classification. No network and no real AI CLIs are needed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from podium.core.instruments.catalog import InstrumentCatalog, builtin_profiles
from podium.core.instruments.profile import (
    InstrumentProfile,
    Invocation,
    InvocationError,
    build_invocation,
)
from podium.core.models import ErrorCategory
from podium.core.runner.classify import classify_failure

BUILTIN_NAMES = {
    "shell", "claude-code", "gemini-cli", "codex-cli", "aider", "goose", "opencode",
    "cursor-agent", "qwen-code", "amp", "approval",
}  # fmt: skip
# `approval` (SPEC §4) runs no process: a gate for a person's decision.
AI_NAMES = sorted(BUILTIN_NAMES - {"shell", "approval"})
PROCESS_NAMES = BUILTIN_NAMES - {"approval"}

# Quotes, a newline, command substitution, backticks and `;`: none of it may be interpreted.
PROMPT = 'Fix the "parser" in Bob\'s code;\nthen echo $(touch pwned) and `touch pwned`; done'

RATE = ErrorCategory.RATE_LIMITED
AUTH = ErrorCategory.AUTH
TRANSIENT = ErrorCategory.TRANSIENT
BILLING = ErrorCategory.BILLING
# Classification is dated against this frozen clock; clock times without a zone read as UTC.
NOW = datetime(2025, 7, 21, 4, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def builtins() -> dict[str, InstrumentProfile]:
    return builtin_profiles()


def _invoke(
    profile: InstrumentProfile,
    prompt_file: Path,
    *,
    model: str | None = None,
    mode: str | None = None,
    extra: list[str] | None = None,
    prompt: str = PROMPT,
) -> Invocation:
    return build_invocation(
        profile,
        prompt,
        model=model,
        permission_mode=mode,
        extra_args=list(extra or []),
        prompt_file=prompt_file,
    )


# --------------------------------------------------------------------------- loading


def test_builtin_names_are_exactly_the_spec_set(builtins: dict[str, InstrumentProfile]) -> None:
    assert set(builtins) == BUILTIN_NAMES


@pytest.mark.parametrize("name", sorted(BUILTIN_NAMES - {"approval"}))
def test_builtin_profile_is_complete(builtins: dict[str, InstrumentProfile], name: str) -> None:
    profile = builtins[name]
    # Round-trips through the strict model (extra fields forbidden, regexes compiled).
    assert InstrumentProfile.model_validate(profile.model_dump()) == profile
    assert profile.description and "\n" not in profile.description
    assert profile.written_for
    assert profile.timeout_seconds == 1800
    assert profile.success_exit_codes == [0]
    assert profile.check is not None and profile.check.version_args == ["--version"]
    assert set(profile.permission_flags) <= {"accept-edits", "bypass", "plan"}
    placeholders = [a for a in profile.args if "{prompt}" in a]
    if profile.prompt_via == "argv":
        assert placeholders, "argv profiles must place {prompt}"
    else:
        assert not placeholders, "{prompt} belongs only to argv profiles"
    if profile.prompt_via == "file":
        assert any("{prompt_file}" in a for a in profile.args)
    if profile.output.format == "json":
        assert profile.output.result_path


def test_the_approval_profile_runs_nothing_and_is_always_available(
    builtins: dict[str, InstrumentProfile],
) -> None:
    profile = builtins["approval"]
    assert profile.kind == "approval" and profile.executable == ""
    assert profile.description and "\n" not in profile.description
    # A person may take a while: a day by default, bounded by timeout_seconds.
    assert profile.timeout_seconds == 86400
    info = InstrumentCatalog.load(None).get("approval")
    assert info is not None and info.available and info.executable_path is None


def test_a_process_profile_needs_an_executable() -> None:
    with pytest.raises(ValueError, match="executable"):
        InstrumentProfile.model_validate({"name": "x", "args": ["{prompt}"]})


def test_a_relative_executable_path_is_refused_and_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bin/my cli` would be probed from the conductor's working directory but run from each
    sheet's workspace: available in `podium instruments`, then not found when a sheet runs."""
    (tmp_path / "bin").mkdir()
    cli = tmp_path / "bin" / "my cli"
    cli.write_text("#!/bin/sh\ncat\n")
    cli.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    user_dir = tmp_path / "instruments"
    user_dir.mkdir()
    for name, executable in (("rel", "bin/my cli"), ("home", "~/bin/my-cli"), ("abs", str(cli))):
        (user_dir / f"{name}.yaml").write_text(
            f"name: {name}\nexecutable: {json.dumps(executable)}\nargs: []\nprompt_via: stdin\n"
        )
    catalog = InstrumentCatalog.load(user_dir)
    assert catalog.get("rel") is None and catalog.get("home") is None
    errors = sorted(catalog.load_errors)
    assert len(errors) == 2, errors
    assert all("executable: " in e and "relative path" in e for e in errors), errors
    assert "bin/my cli" in errors[1] and "~/bin/my-cli" in errors[0]
    # An absolute path (spaces and all) is fine, and says so when it is gone.
    usable = catalog.get("abs")
    assert usable is not None and usable.available and usable.executable_path == str(cli)
    cli.unlink()
    gone = InstrumentCatalog.load(user_dir).check("abs")
    assert gone is not None and "does not exist or is not executable" in gone, gone
    assert "PATH" not in gone


@pytest.mark.parametrize("name", AI_NAMES)
def test_ai_profiles_never_put_the_prompt_on_argv_or_through_a_shell(
    builtins: dict[str, InstrumentProfile], name: str
) -> None:
    profile = builtins[name]
    assert profile.prompt_via in ("stdin", "file")
    assert profile.executable not in ("bash", "sh", "zsh")
    assert profile.model_flag
    assert profile.patterns.rate_limit and profile.patterns.auth and profile.patterns.transient


@pytest.mark.parametrize("name", AI_NAMES)
def test_retry_after_groups_exist_in_their_regex(
    builtins: dict[str, InstrumentProfile], name: str
) -> None:
    for pattern in builtins[name].patterns.rate_limit:
        if pattern.retry_after_group:
            assert pattern.retry_after_group in re.compile(pattern.regex).groupindex


# --------------------------------------------------------------------------- exact argv

FULL_CASES = [
    (
        "claude-code",
        "sonnet",
        "accept-edits",
        ["--max-turns", "5"],
        [
            "claude", "-p", "--output-format", "stream-json", "--verbose",
            "--model", "sonnet",
            "--permission-mode", "acceptEdits",
            "--max-turns", "5",
        ],
    ),
    (
        "gemini-cli",
        "gemini-2.5-pro",
        "bypass",
        ["--include-directories", "docs"],
        [
            "gemini", "--output-format", "stream-json",
            "--model", "gemini-2.5-pro",
            "--approval-mode", "yolo",
            "--include-directories", "docs",
        ],
    ),
    (
        "codex-cli",
        "gpt-5-codex",
        "accept-edits",
        ["--ephemeral"],
        [
            "codex", "exec", "--json", "--skip-git-repo-check",
            "--model", "gpt-5-codex",
            "--sandbox", "workspace-write",
            "--ephemeral",
        ],
    ),
    (
        "aider",
        "sonnet",
        "plan",
        ["--no-auto-commits"],
        [
            "aider", "--message-file", "<PROMPT_FILE>",
            "--yes-always", "--no-pretty", "--no-stream", "--no-check-update",
            "--no-show-release-notes", "--no-analytics", "--no-detect-urls",
            "--model", "sonnet",
            "--chat-mode", "ask",
            "--no-auto-commits",
        ],
    ),
    (
        "goose",
        "claude-sonnet-4-5",
        None,
        ["--max-turns", "20"],
        [
            "goose", "run", "--no-session", "-i", "-",
            "--model", "claude-sonnet-4-5",
            "--max-turns", "20",
        ],
    ),
    (
        "opencode",
        "anthropic/claude-sonnet-4-5",
        "plan",
        ["--title", "nightly"],
        [
            "opencode", "run", "--format", "json",
            "--model", "anthropic/claude-sonnet-4-5",
            "--agent", "plan",
            "--title", "nightly",
        ],
    ),
    (
        "cursor-agent",
        "sonnet-4.5",
        "bypass",
        ["--sandbox", "enabled"],
        [
            "cursor-agent", "--print", "--output-format", "stream-json", "--trust",
            "--model", "sonnet-4.5",
            "--force",
            "--sandbox", "enabled",
        ],
    ),
    (
        "qwen-code",
        "qwen3-coder-plus",
        "accept-edits",
        ["--max-session-turns", "30"],
        [
            "qwen", "--output-format", "stream-json",
            "--model", "qwen3-coder-plus",
            "--approval-mode", "auto-edit",
            "--max-session-turns", "30",
        ],
    ),
    (
        "amp",
        "claude-sonnet-4-5",
        "bypass",
        ["--mode", "rush"],
        [
            "amp", "--execute", "--stream-json",
            "--model", "claude-sonnet-4-5",
            "--dangerously-allow-all",
            "--mode", "rush",
        ],
    ),
    ("shell", None, None, [], ["bash", "-c", PROMPT]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "model", "mode", "extra", "expected"), FULL_CASES)
def test_build_invocation_exact_argv(
    builtins: dict[str, InstrumentProfile],
    tmp_path: Path,
    name: str,
    model: str | None,
    mode: str | None,
    extra: list[str],
    expected: list[str],
) -> None:
    prompt_file = tmp_path / "p.txt"
    profile = builtins[name]
    inv = _invoke(profile, prompt_file, model=model, mode=mode, extra=extra)
    assert inv.argv == [str(prompt_file) if a == "<PROMPT_FILE>" else a for a in expected]
    if profile.prompt_via == "stdin":
        assert inv.stdin_data == PROMPT.encode()
        assert inv.prompt_file is None
        assert not prompt_file.exists()
    elif profile.prompt_via == "file":
        assert inv.stdin_data is None
        assert inv.prompt_file == prompt_file
        assert prompt_file.read_text() == PROMPT
    else:
        assert inv.stdin_data is None and inv.prompt_file is None


# Every permission mode of every built-in, without a model or extra args: the argv and the
# environment variables the mode sets.
MODE_CASES = [
    ("claude-code", "accept-edits",
     ["claude", "-p", "--output-format", "stream-json", "--verbose",
      "--permission-mode", "acceptEdits"], {}),
    ("claude-code", "bypass",
     ["claude", "-p", "--output-format", "stream-json", "--verbose",
      "--dangerously-skip-permissions"], {}),
    ("claude-code", "plan",
     ["claude", "-p", "--output-format", "stream-json", "--verbose",
      "--permission-mode", "plan"], {}),
    ("gemini-cli", "accept-edits",
     ["gemini", "--output-format", "stream-json", "--approval-mode", "auto_edit"], {}),
    ("gemini-cli", "bypass",
     ["gemini", "--output-format", "stream-json", "--approval-mode", "yolo"], {}),
    ("gemini-cli", "plan",
     ["gemini", "--output-format", "stream-json", "--approval-mode", "plan"], {}),
    ("codex-cli", "accept-edits",
     ["codex", "exec", "--json", "--skip-git-repo-check", "--sandbox", "workspace-write"], {}),
    ("codex-cli", "bypass",
     ["codex", "exec", "--json", "--skip-git-repo-check",
      "--dangerously-bypass-approvals-and-sandbox"], {}),
    ("codex-cli", "plan",
     ["codex", "exec", "--json", "--skip-git-repo-check", "--sandbox", "read-only"], {}),
    ("aider", "accept-edits",
     ["aider", "--message-file", "<PROMPT_FILE>", "--yes-always", "--no-pretty", "--no-stream",
      "--no-check-update", "--no-show-release-notes", "--no-analytics", "--no-detect-urls"], {}),
    ("aider", "plan",
     ["aider", "--message-file", "<PROMPT_FILE>", "--yes-always", "--no-pretty", "--no-stream",
      "--no-check-update", "--no-show-release-notes", "--no-analytics", "--no-detect-urls",
      "--chat-mode", "ask"], {}),
    ("goose", "bypass", ["goose", "run", "--no-session", "-i", "-"], {"GOOSE_MODE": "auto"}),
    ("goose", "plan", ["goose", "run", "--no-session", "-i", "-"], {"GOOSE_MODE": "chat"}),
    ("opencode", "bypass", ["opencode", "run", "--format", "json", "--auto"], {}),
    ("opencode", "plan", ["opencode", "run", "--format", "json", "--agent", "plan"], {}),
    ("cursor-agent", "accept-edits",
     ["cursor-agent", "--print", "--output-format", "stream-json", "--trust"], {}),
    ("cursor-agent", "bypass",
     ["cursor-agent", "--print", "--output-format", "stream-json", "--trust", "--force"], {}),
    ("cursor-agent", "plan",
     ["cursor-agent", "--print", "--output-format", "stream-json", "--trust",
      "--mode", "plan"], {}),
    ("qwen-code", "accept-edits",
     ["qwen", "--output-format", "stream-json", "--approval-mode", "auto-edit"], {}),
    ("qwen-code", "bypass",
     ["qwen", "--output-format", "stream-json", "--approval-mode", "yolo"], {}),
    ("qwen-code", "plan",
     ["qwen", "--output-format", "stream-json", "--approval-mode", "plan"], {}),
    ("amp", "bypass", ["amp", "--execute", "--stream-json", "--dangerously-allow-all"], {}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "mode", "expected", "env"), MODE_CASES)
def test_permission_mode_flags_exact(
    builtins: dict[str, InstrumentProfile],
    tmp_path: Path,
    name: str,
    mode: str,
    expected: list[str],
    env: dict[str, str],
) -> None:
    prompt_file = tmp_path / "p.txt"
    inv = _invoke(builtins[name], prompt_file, mode=mode)
    assert inv.argv == [str(prompt_file) if a == "<PROMPT_FILE>" else a for a in expected]
    assert inv.env == env


def test_mode_cases_cover_every_declared_mode(builtins: dict[str, InstrumentProfile]) -> None:
    declared = {(n, m) for n, p in builtins.items() for m in p.permission_flags}
    assert declared == {(n, m) for n, m, _, _ in MODE_CASES}


@pytest.mark.parametrize("name", sorted(PROCESS_NAMES))
def test_unknown_permission_mode_names_the_allowed_ones(
    builtins: dict[str, InstrumentProfile], tmp_path: Path, name: str
) -> None:
    profile = builtins[name]
    with pytest.raises(InvocationError) as excinfo:
        _invoke(profile, tmp_path / "p.txt", mode="full-trust")
    message = str(excinfo.value)
    assert "full-trust" in message and name in message
    allowed = sorted(profile.permission_flags)
    for mode in allowed:
        assert mode in message
    assert f"(allowed: {', '.join(allowed) or 'none'})" in message


def test_model_on_a_profile_without_model_flag_raises(
    builtins: dict[str, InstrumentProfile], tmp_path: Path
) -> None:
    assert builtins["shell"].model_flag is None
    with pytest.raises(InvocationError, match="has no model flag"):
        _invoke(builtins["shell"], tmp_path / "p.txt", model="sonnet")


# --------------------------------------------------------------------------- prompt delivery

FAKE_CLI = """#!{python}
import json, os, sys
data = {{"argv": sys.argv[1:], "stdin": sys.stdin.buffer.read().decode("utf-8")}}
with open(os.environ["FAKE_CLI_OUT"], "w", encoding="utf-8") as fh:
    json.dump(data, fh)
"""


@pytest.fixture
def fake_cli(tmp_path: Path) -> Path:
    script = tmp_path / "fake-cli"
    script.write_text(FAKE_CLI.format(python=sys.executable))
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("name", sorted(PROCESS_NAMES))
def test_prompt_reaches_the_cli_unchanged(
    builtins: dict[str, InstrumentProfile], tmp_path: Path, fake_cli: Path, name: str
) -> None:
    profile = builtins[name].model_copy(update={"executable": str(fake_cli)})
    workdir = tmp_path / "work"
    workdir.mkdir()
    prompt_file = tmp_path / "sheet.prompt"
    out = tmp_path / "received.json"
    inv = _invoke(profile, prompt_file)

    done = subprocess.run(
        inv.argv,
        input=inv.stdin_data,
        stdin=None if inv.stdin_data is not None else subprocess.DEVNULL,
        cwd=workdir,
        env={**os.environ, "FAKE_CLI_OUT": str(out)},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    received = json.loads(out.read_text(encoding="utf-8"))
    assert received["argv"] == inv.argv[1:]

    if profile.prompt_via == "stdin":
        assert received["stdin"] == PROMPT
        assert all(PROMPT not in arg for arg in received["argv"])
    elif profile.prompt_via == "file":
        assert received["stdin"] == ""
        path = Path(received["argv"][received["argv"].index(str(prompt_file))])
        assert path.read_text() == PROMPT
    else:  # shell: the prompt is the script given to `bash -c`, verbatim
        assert name == "shell"
        assert received["argv"] == ["-c", PROMPT]
        assert received["stdin"] == ""

    for where in (workdir, tmp_path, Path.cwd()):
        assert not (where / "pwned").exists()


# --------------------------------------------------------------------------- catalog


@pytest.fixture
def only_bash_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding nothing but bash, so availability does not depend on this machine."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    real_bash = next(
        Path(d) / "bash"
        for d in [*os.environ.get("PATH", "").split(os.pathsep), "/bin", "/usr/bin"]
        if d and (Path(d) / "bash").is_file()
    )
    (bindir / "bash").symlink_to(real_bash)
    monkeypatch.setenv("PATH", str(bindir))
    return bindir


USER_CLAUDE = """\
name: claude-code
description: my own claude wrapper
written_for: "test"
executable: podium-test-no-such-claude
args: ["-p", "--output-format", "text"]
prompt_via: stdin
model_flag: "--model"
"""


def test_a_quota_pool_named_after_another_instrument_is_refused(
    tmp_path: Path, only_bash_on_path: Path
) -> None:
    # Holds are kept under the pool's name, else the instrument's: a pool "codex-cli" would
    # hold codex-cli (on another account) whenever this profile hit its limit.
    user_dir = tmp_path / "instruments"
    user_dir.mkdir()
    profile = "executable: claude\nargs: ['-p']\nprompt_via: stdin\n"
    (user_dir / "my-claude.yaml").write_text(f"name: my-claude\n{profile}quota_pool: codex-cli\n")
    (user_dir / "claude-code.yaml").write_text(
        f"name: claude-code\n{profile}quota_pool: codex-cli\n"
    )
    # A pool named after an instrument in that same pool is one account, as meant.
    (user_dir / "team.yaml").write_text(f"name: team\n{profile}quota_pool: team\n")
    (user_dir / "team-2.yaml").write_text(f"name: team-2\n{profile}quota_pool: team\n")

    catalog = InstrumentCatalog.load(user_dir)

    errors = sorted(catalog.load_errors)
    assert len(errors) == 2, errors
    for error, file in zip(errors, ["claude-code.yaml", "my-claude.yaml"], strict=True):
        assert file in error
        assert (
            "quota_pool: 'codex-cli' is the name of an instrument that is not in that pool" in error
        )
    assert catalog.get("my-claude") is None
    claude = catalog.get("claude-code")
    assert claude is not None and claude.source == "builtin"
    keys = catalog.hold_keys()
    assert keys["codex-cli"] == "codex-cli" and keys["claude-code"] == "claude-code"
    assert keys["team"] == keys["team-2"] == "team"


def test_user_profile_overrides_builtin_and_broken_one_is_reported(
    tmp_path: Path, only_bash_on_path: Path
) -> None:
    user_dir = tmp_path / "instruments"
    user_dir.mkdir()
    (user_dir / "claude-code.yaml").write_text(USER_CLAUDE)
    (user_dir / "broken.yaml").write_text("name: Not A Valid Name!\nexecutable: x\n")
    (user_dir / "garbled.yml").write_text("name: [unclosed\n")

    catalog = InstrumentCatalog.load(user_dir)

    assert {info.name for info in catalog.all()} == BUILTIN_NAMES
    claude = catalog.get("claude-code")
    assert claude is not None
    assert claude.source == str(user_dir / "claude-code.yaml")
    assert claude.profile.description == "my own claude wrapper"
    assert claude.profile.executable == "podium-test-no-such-claude"
    assert claude.available is False and claude.version is None
    problem = catalog.check("claude-code")
    assert problem is not None and "podium-test-no-such-claude" in problem

    assert len(catalog.load_errors) == 2
    assert any("broken.yaml" in e for e in catalog.load_errors)
    assert any("garbled.yml" in e for e in catalog.load_errors)

    for name in BUILTIN_NAMES - {"claude-code"}:
        info = catalog.get(name)
        assert info is not None and info.source == "builtin"


def test_availability_and_check(tmp_path: Path, only_bash_on_path: Path) -> None:
    catalog = InstrumentCatalog.load(None)
    assert catalog.load_errors == []

    shell = catalog.get("shell")
    assert shell is not None
    assert shell.available is True
    assert shell.executable_path == str(only_bash_on_path / "bash")
    assert shell.version and "bash" in shell.version.lower()
    assert catalog.check("shell") is None

    for name in AI_NAMES:
        info = catalog.get(name)
        assert info is not None and info.available is False
        problem = catalog.check(name)
        assert problem is not None and repr(info.profile.executable) in problem

    unknown = catalog.check("no-such-instrument")
    assert unknown is not None and "known instruments" in unknown


# --------------------------------------------------------------------------- classification

# Ordinary failure output, deliberately full of near-misses ("429", "rate limiter", seconds).
ORDINARY = (
    "FAILED tests/test_api.py::test_rate_limiter_returns_429 - assert 200 == 429\n"
    "1 failed, 41 passed in 3.2s\n"
    "Error: the agent stopped because the tests are still failing\n"
)

CLASSIFY_CASES = [
    # claude-code
    ("claude-code",
     'API Error: 429 {"type":"error","error":{"type":"rate_limit_error","message":'
     '"This request would exceed your account\'s rate limit. Please try again later."}}',
     RATE, None),
    ("claude-code",
     '{"type":"result","subtype":"success","is_error":true,'
     '"result":"API Error: Rate limit reached"}',
     RATE, None),
    # The epoch after "|" is a reset time, not seconds to wait: 06:00 UTC, two hours on.
    ("claude-code", "Claude AI usage limit reached|1753077600", RATE, 7200.0),
    # 1pm in Lisbon (UTC+1 in July) is 12:00 UTC, eight hours on.
    ("claude-code", "You've hit your limit · resets 1pm (Europe/Lisbon)", RATE, 28800.0),
    ("claude-code", "Your credit balance is too low to access the Anthropic API.", BILLING, None),
    ("claude-code", "Invalid API key · Please run /login", AUTH, None),
    ("claude-code",
     'API Error: 401 {"type":"error","error":{"type":"authentication_error",'
     '"message":"invalid x-api-key"}}',
     AUTH, None),
    ("claude-code",
     'API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
     TRANSIENT, None),
    ("claude-code", "API Error: Connection error.", TRANSIENT, None),
    ("claude-code",
     '{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":5}', None, None),
    # gemini-cli
    ("gemini-cli",
     '[API Error: got status: 429 Too Many Requests. {"error":{"code":429,"message":'
     '"Quota exceeded for quota metric. Please retry in 37.5s.","status":"RESOURCE_EXHAUSTED"}}]',
     RATE, 37.5),
    ("gemini-cli",
     r'{"error":{"message":"{\n  \"error\": {\n    \"code\": 429,\n    \"details\": [{'
     r'\"@type\": \"type.googleapis.com/google.rpc.RetryInfo\", \"retryDelay\": \"21s\"}]',
     RATE, 21.0),
    ("gemini-cli",
     "TerminalQuotaError: You have exhausted your capacity on this model. "
     "Your quota will reset after 39s.",
     RATE, 39.0),
    ("gemini-cli",
     "TerminalQuotaError: You have exhausted your capacity on this model. "
     "Your quota will reset after 1h49m8s.",
     RATE, 6548.0),
    # Daily quotas reset at midnight Pacific: 07:00 UTC in July, three hours on.
    ("gemini-cli", "You have exhausted your daily quota on this model.", RATE, 10800.0),
    ("gemini-cli",
     '{"session_id":"473f","error":{"type":"Error","message":"Please set an Auth method in your '
     '/root/.gemini/settings.json or specify one of the following environment variables before '
     'running: GEMINI_API_KEY, GOOGLE_GENAI_USE_VERTEXAI, GOOGLE_GENAI_USE_GCA","code":41}}',
     AUTH, None),
    ("gemini-cli", "API key not valid. Please pass a valid API key.", AUTH, None),
    ("gemini-cli",
     '[API Error: got status: 503 Service Unavailable. {"error":{"code":503,"message":'
     '"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}]',
     TRANSIENT, None),
    ("gemini-cli",
     '{"session_id":"x","error":{"type":"Error","message":"Reached max session turns","code":53}}',
     None, None),
    # codex-cli
    ("codex-cli",
     "ERROR: exceeded retry limit, last status: 429 Too Many Requests, request id: c4fc59ca",
     RATE, None),
    ("codex-cli",
     'Error: {"type":"error","error":{"type":"usage_limit_reached","message":"The usage limit '
     'has been reached","plan_type":"plus","resets_at":1777936568,"resets_in_seconds":13872}}',
     RATE, 13872.0),
    ("codex-cli",
     "stream error: Rate limit reached for gpt-5 in organization org-x on tokens per min (TPM): "
     "Limit 30000, Used 29000, Requested 2000. Please try again in 2.004s.",
     RATE, 2.004),
    ("codex-cli",
     "ERROR: exceeded retry limit, last status: 401 Unauthorized, request id: 9a5793386e39fede",
     AUTH, None),
    ("codex-cli",
     "Your access token could not be refreshed because your refresh token has expired. "
     "Please log out and sign in again.",
     AUTH, None),
    ("codex-cli", "ERROR: exceeded retry limit, last status: 503 Service Unavailable",
     TRANSIENT, None),
    ("codex-cli", "stream disconnected before completion: error sending request", TRANSIENT, None),
    ("codex-cli", "Quota exceeded. Check your plan and billing details.", BILLING, None),
    # A 429 whose body says the quota is spent is a stop, not a wait.
    ("codex-cli",
     'unexpected status 429 Too Many Requests: {"error":{"message":"You exceeded your current '
     'quota, please check your plan and billing details.","type":"insufficient_quota"}}',
     BILLING, None),
    # aider
    ("aider",
     'litellm.RateLimitError: AnthropicException - {"type":"error","error":'
     '{"type":"rate_limit_error"}}\n'
     "The API provider has rate limited you. Try again later or check your quotas.\n"
     "Retrying in 0.2 seconds...",
     RATE, None),
    ("aider",
     "litellm.RateLimitError: OpenAIException - Rate limit reached for gpt-4o. "
     "Please try again in 20s.",
     RATE, 20.0),
    ("aider",
     "litellm.AuthenticationError: AnthropicException - invalid x-api-key\n"
     "The API provider is not able to authenticate you. Check your API key.",
     AUTH, None),
    ("aider",
     "litellm.InternalServerError: AnthropicException - Overloaded\n"
     "The API provider's servers are down or overloaded.",
     TRANSIENT, None),
    # goose
    ("goose", "Error: Rate limit exceeded: Please try again in 12s.", RATE, 12.0),
    ("goose", "Error: Request failed: 429 Too Many Requests (status: 429)", RATE, None),
    ("goose",
     "Error: Authentication error: Authentication failed. Please ensure your API keys are valid",
     AUTH, None),
    ("goose", "error: No provider configured. Run 'goose configure' first.", AUTH, None),
    ("goose", "Error: Credits exhausted: your OpenRouter balance is spent", BILLING, None),
    ("goose", "Error: Server error: Service Unavailable", TRANSIENT, None),
    ("goose",
     "Error: Network error: Could not connect to api.anthropic.com — check your network "
     "connection and try again.",
     TRANSIENT, None),
    # opencode
    ("opencode", "Error: AI_RetryError: Failed after 4 attempts. Last error: Too Many Requests",
     RATE, None),
    ("opencode",
     'Error: OpenAI API error (429): {"code":"rate_limit_exceeded","type":"rate_limit_error",'
     '"message":"Rate limit exceeded. Please retry after a brief wait."}',
     RATE, None),
    ("opencode",
     "Error: AI_LoadAPIKeyError: Anthropic API key is missing. Pass it using the 'apiKey' "
     "parameter or the ANTHROPIC_API_KEY environment variable.",
     AUTH, None),
    ("opencode", "Error: ProviderAuthError", AUTH, None),
    ("opencode",
     'Error: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
     TRANSIENT, None),
    # cursor-agent: the reason is on stderr only, with a non-zero exit
    ("cursor-agent", "Error: 429 Too Many Requests", RATE, None),
    ("cursor-agent",
     "Error: You've hit your usage limit\n  Get Cursor Pro for more Agent usage, unlimited Tab, "
     "and more.\n  fallbackModel: \n  spendLimitHit: false\n  chatMessage: *You've hit your "
     "free requests limit. Your usage limits will reset when your monthly cycle ends on "
     "11/17/2025.*",
     BILLING, None),
    ("cursor-agent",
     "Error: Authentication required. Please run 'cursor-agent login' first, or set "
     "CURSOR_API_KEY environment variable.",
     AUTH, None),
    ("cursor-agent", "Error: read ECONNRESET", TRANSIENT, None),
    # qwen-code
    ("qwen-code", "[API Error: 429 Free allocated quota exceeded.]", RATE, None),
    ("qwen-code", "[API Error: 429 status code (no body)]", RATE, None),
    ("qwen-code", "[API Error: 401 status code (no body)]", AUTH, None),
    ("qwen-code", "[API Error: 503 status code (no body)]", TRANSIENT, None),
    # amp
    ("amp", "Error: Out of Credits", BILLING, None),
    ("amp", "Error: 429 Too Many Requests", RATE, None),
    ("amp", "Error: Unauthorized. Run amp login to sign in.", AUTH, None),
    ("amp", "Error: 503 Service Unavailable", TRANSIENT, None),
] + [(name, ORDINARY, None, None) for name in AI_NAMES]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "text", "category", "wait"), CLASSIFY_CASES)
async def test_classify_failure(
    builtins: dict[str, InstrumentProfile],
    name: str,
    text: str,
    category: ErrorCategory | None,
    wait: float | None,
) -> None:
    classified = await classify_failure(builtins[name], text, now=NOW, zone=UTC)
    assert classified.problems == ()
    found = classified.found
    if category is None:
        assert found is None
        return
    assert found is not None
    assert found.category == category
    assert found.retry_after_seconds == wait
    assert found.excerpt
    if wait is None:
        assert found.reset_at is None
    else:
        assert found.reset_at is not None
        assert (found.reset_at - NOW).total_seconds() == wait


def test_every_ai_profile_has_classification_samples() -> None:
    for name in AI_NAMES:
        categories = {c for n, _, c, _ in CLASSIFY_CASES if n == name}
        assert {RATE, AUTH, TRANSIENT, None} <= categories, name


@pytest.mark.anyio
async def test_shell_never_classifies(builtins: dict[str, InstrumentProfile]) -> None:
    classified = await classify_failure(builtins["shell"], "API Error: 429 rate_limit_error")
    assert classified.found is None


@pytest.mark.parametrize("name", AI_NAMES)
def test_ai_profiles_say_whether_session_resume_is_supported(
    builtins: dict[str, InstrumentProfile], name: str
) -> None:
    folder = Path(__file__).resolve().parents[1] / "core" / "instruments" / "builtin"
    text = (folder / f"{name}.yaml").read_text()
    said = re.search(r"^# Session resume: (supported|not supported)", text, re.MULTILINE)
    assert said is not None, f"{name}.yaml must say whether session resume is supported"
    assert (said.group(1) == "supported") == (builtins[name].session is not None)


def test_a_version_probe_leaves_nothing_behind_and_reads_no_failure_as_a_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    from podium.core.instruments import catalog

    def script(name: str, body: str) -> str:
        path = tmp_path / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(0o755)
        return str(path)

    assert catalog._version_line([script("ok", "echo 'fakecli 1.2.3'")]) == "fakecli 1.2.3"
    failing = script("bad", "echo 'error: unknown option --version' >&2; exit 2")
    assert catalog._version_line([failing]) is None
    # A wrapper that leaves a helper holding its output: at the timeout the probe keeps
    # what the wrapper printed before it ended, and the helper is ended with it.
    monkeypatch.setattr(catalog, "VERSION_SECONDS", 1.0)
    pid_file = tmp_path / "helper.pid"
    lingering = script("linger", f"echo 'fakecli 2.0.0'; sleep 300 & echo $! > {pid_file}")
    assert catalog._version_line([lingering]) == "fakecli 2.0.0"
    helper = int(pid_file.read_text())

    def gone() -> bool:
        try:
            return psutil.Process(helper).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 10  # the SIGKILL is sent; its delivery takes a moment
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone()
