"""The profile model's new parts: JSON selectors, reset specs, sessions, usage, quota pools,
environment-setting permission modes, resume arguments on the command line, retry prompts,
and whether the installed CLI is the version a profile was written for."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_zygote import run_podium
from pydantic import ValidationError

from podium.core.instruments.catalog import InstrumentCatalog, builtin_profiles
from podium.core.instruments.jsondocs import JsonSelector, parse_documents, select, string_leaves
from podium.core.instruments.profile import (
    InstrumentProfile,
    RateLimitPattern,
    ResetSpec,
    build_invocation,
    hold_key,
)
from podium.core.instruments.versions import installed_version, version_matches
from podium.core.models import ValidationResult
from podium.core.runner.prompts import CONTINUE_NOTE, attempt_prompt, validation_feedback
from podium.core.views import InstrumentView

EVENTS = [
    {"type": "init", "session_id": "s-1"},
    {"type": "step", "cost": 0.5, "tokens": {"a": {"in": 3}, "b": {"in": 4}}},
    {"type": "text", "text": "Hel"},
    {"type": "step", "cost": 0.25, "tokens": {"a": {"in": 1}}},
    {"type": "text", "text": "lo"},
    {"type": "flag", "on": 1, "items": ["x", "y", "z"]},
]


def sel(data: Any) -> JsonSelector:
    return JsonSelector.model_validate(data)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("session_id", "s-1"),
        ({"path": "text", "where": {"type": "text"}}, "lo"),
        ({"path": "text", "where": {"type": "text"}, "combine": "first"}, "Hel"),
        ({"path": "text", "where": {"type": "text"}, "combine": "concat"}, "Hello"),
        ({"path": "cost", "where": {"type": "step"}, "combine": "sum"}, 0.75),
        # A wildcard over per-model counts sums them within one document.
        ({"path": "tokens.*.in", "where": {"type": "step"}, "combine": "first"}, 7),
        ({"path": "tokens.*.in", "where": {"type": "step"}, "combine": "sum"}, 8),
        ({"path": "items.-1", "where": {"type": "flag"}}, "z"),
        ({"path": "items.0", "where": {"type": "flag"}}, "x"),
        # JSON true is not 1.
        ({"path": "items.0", "where": {"on": True}}, None),
        ({"path": "missing"}, None),
        # `otherwise` is read only when no document has the value (a CLI's other form).
        ({"path": "missing", "otherwise": {"path": "text", "where": {"type": "text"}}}, "lo"),
        ({"path": "session_id", "otherwise": {"path": "text", "where": {"type": "text"}}},
         "s-1"),
        ({"path": "missing", "otherwise": {"path": "gone", "otherwise": "session_id"}}, "s-1"),
        ({"path": "missing", "otherwise": "gone"}, None),
    ],
)  # fmt: skip
def test_selectors(selector: Any, expected: Any) -> None:
    assert select(sel(selector), EVENTS) == expected


@pytest.mark.parametrize(
    "bad", ["", "a..b", ".a", {"path": "a", "combine": "avg"}, {"path": "a", "otherwise": "b..c"}]
)
def test_bad_selectors(bad: Any) -> None:
    with pytest.raises(ValidationError):
        sel(bad)


def test_documents_from_json_jsonl_and_arrays() -> None:
    assert parse_documents("json", '{"a": 1}') == [{"a": 1}]
    # A top-level array (qwen's json output) is a sequence of documents.
    assert parse_documents("json", '[{"a": 1}, {"b": 2}]') == [{"a": 1}, {"b": 2}]
    # Banners, warnings and a line cut by the output tail are skipped.
    stdout = 'Loaded cached credentials.\n{"a": 1}\n{"b": \n{"c": 3}\n'
    assert parse_documents("jsonl", stdout) == [{"a": 1}, {"c": 3}]
    assert parse_documents("json", stdout) == [{"a": 1}, {"c": 3}]
    assert parse_documents("text", '{"a": 1}') == []


def test_string_leaves_unescape_and_cap() -> None:
    docs = parse_documents("jsonl", '{"m": "You\\u2019ve hit\\nyour limit", "n": [1, "x"]}')
    assert string_leaves(docs, 1000) == "You\u2019ve hit\nyour limit\nx"
    assert string_leaves(docs, 5) == "mit\nx"


# --------------------------------------------------------------------------- reset specs


def test_rate_limit_pattern_rules() -> None:
    ok = RateLimitPattern.model_validate(
        {"regex": "resets (?P<at>.+) \\((?P<z>.+)\\)", "reset": {"group": "at", "zone_group": "z"}}
    )
    assert ok.reset_spec is not None and ok.reset_spec.kind == "auto"
    legacy = RateLimitPattern.model_validate({"regex": "(?P<s>\\d+)s", "retry_after_group": "s"})
    assert legacy.reset_spec == ResetSpec(kind="seconds", group="s")
    bad = [
        {},
        {"regex": "x", "json_where": {"type": "e"}},
        {"json_where": {}},
        {"regex": "(?P<s>x)", "retry_after_group": "s", "reset": {"group": "s"}},
        {"regex": "x", "reset": {"group": "nope"}},
        {"regex": "(?P<a>x)", "reset": {"group": "a", "zone_group": "nope"}},
        {"regex": "x", "reset": {"path": "resetsAt"}},
        {"json_where": {"type": "e"}, "reset": {"group": "a"}},
        {"regex": "(", "reset": {"value": "1pm"}},
    ]
    for data in bad:
        with pytest.raises(ValidationError):
            RateLimitPattern.model_validate(data)


def test_reset_spec_rules() -> None:
    assert ResetSpec(value="12am", zone="America/Los_Angeles").kind == "auto"
    for data in [{}, {"group": "a", "value": "1pm"}, {"value": "1pm", "zone": "Mars/Olympus"},
                 {"value": "1pm", "kind": "fortnightly"}]:  # fmt: skip
        with pytest.raises(ValidationError):
            ResetSpec.model_validate(data)


# --------------------------------------------------------------------------- profiles

BASE = {"name": "x", "executable": "x", "args": [], "prompt_via": "stdin"}


def profile(**fields: Any) -> InstrumentProfile:
    return InstrumentProfile.model_validate({**BASE, **fields})


def test_structured_parts_need_json_output() -> None:
    session = {"id_path": "session_id", "resume_args": ["--resume", "{session_id}"]}
    for fields in [
        {"session": session},
        {"usage": {"cost_usd_path": "cost"}},
        {"output": {"format": "text", "result_path": "result"}},
        {"patterns": {"rate_limit": [{"json_where": {"type": "rate_limit_event"}}]}},
    ]:
        with pytest.raises(ValidationError, match="json or jsonl"):
            profile(**fields)
    assert profile(output={"format": "jsonl"}, session=session).session is not None


def test_session_and_marker_rules() -> None:
    with pytest.raises(ValidationError, match="session_id"):
        profile(output={"format": "json"}, session={"id_path": "id", "resume_args": ["--resume"]})
    with pytest.raises(ValidationError, match="needs a `session`"):
        profile(args=["{resume_args}"])
    with pytest.raises(ValidationError):
        profile(quota_pool="Not A Pool")


def test_quota_pool_is_the_hold_key() -> None:
    assert hold_key(profile()) == "x"
    assert hold_key(profile(quota_pool="anthropic-max")) == "anthropic-max"


def test_profiles_in_the_older_format_still_load() -> None:
    old = yaml.safe_load(
        """
name: my-claude
executable: claude
args: ["-p", "--output-format", "json"]
prompt_via: stdin
permission_flags: {bypass: ["--dangerously-skip-permissions"]}
output: {format: json, result_path: "result", error_path: "is_error"}
patterns:
  rate_limit:
    - {regex: 'retry in (?P<secs>\\d+)s', retry_after_group: secs}
  auth: ["Invalid API key"]
"""
    )
    loaded = InstrumentProfile.model_validate(old)
    assert loaded.permission_flags["bypass"].args == ["--dangerously-skip-permissions"]
    assert loaded.output.result_path == JsonSelector(path="result")
    assert loaded.patterns.rate_limit[0].reset_spec == ResetSpec(kind="seconds", group="secs")
    assert InstrumentProfile.model_validate(loaded.model_dump()) == loaded


RESUMABLE = {
    **BASE,
    "args": ["exec", "--json"],
    "model_flag": "--model",
    "output": {"format": "jsonl"},
    "session": {"id_path": "thread_id", "resume_args": ["resume", "{session_id}", "-"]},
    "permission_flags": {"plan": {"args": ["--sandbox", "read-only"], "env": {"MODE": "plan"}}},
}


def invoke(data: dict[str, Any], tmp_path: Path, **kw: Any) -> Any:
    return build_invocation(
        InstrumentProfile.model_validate(data),
        "task",
        model=kw.pop("model", None),
        permission_mode=kw.pop("mode", None),
        extra_args=kw.pop("extra", []),
        prompt_file=tmp_path / "p",
        **kw,
    )


def test_resume_args_come_last_and_the_mode_sets_env(tmp_path: Path) -> None:
    inv = invoke(RESUMABLE, tmp_path, model="m", mode="plan", extra=["--x"], resume_session_id="t1")
    assert inv.argv == ["x", "exec", "--json", "--model", "m", "--sandbox", "read-only", "--x",
                        "resume", "t1", "-"]  # fmt: skip
    assert inv.env == {"MODE": "plan"}
    assert inv.resumed_session_id == "t1"
    fresh = invoke(RESUMABLE, tmp_path)
    assert fresh.argv == ["x", "exec", "--json"] and fresh.resumed_session_id is None


def test_resume_marker_places_a_subcommand_first(tmp_path: Path) -> None:
    session = {"id_path": "id", "resume_args": ["threads", "continue", "{session_id}"]}
    data = {**RESUMABLE, "args": ["{resume_args}", "-x"], "session": session}
    assert invoke(data, tmp_path, resume_session_id="T-1").argv == [
        "x", "threads", "continue", "T-1", "-x",
    ]  # fmt: skip
    assert invoke(data, tmp_path).argv == ["x", "-x"]


@pytest.mark.parametrize("bad", ["-rf", "--resume", "a b", "x;rm", "", "é"])
def test_unsafe_session_ids_are_never_put_on_the_command_line(tmp_path: Path, bad: str) -> None:
    inv = invoke(RESUMABLE, tmp_path, resume_session_id=bad)
    assert inv.argv == ["x", "exec", "--json"] and inv.resumed_session_id is None


def test_a_profile_without_session_ignores_a_resume_id(tmp_path: Path) -> None:
    inv = invoke({**BASE, "args": ["run"]}, tmp_path, resume_session_id="s-1")
    assert inv.argv == ["x", "run"] and inv.resumed_session_id is None


# --------------------------------------------------------------------------- retry prompts


def test_validation_feedback_names_the_failed_checks() -> None:
    results = [
        ValidationResult(type="file_exists", passed=True, detail="out.txt exists"),
        ValidationResult(type="content_regex", passed=False, detail="count.txt: no match"),
        ValidationResult(type="command_succeeds", passed=False, detail="x" * 1000),
    ]
    feedback = validation_feedback(results)
    assert feedback is not None
    assert "content_regex: count.txt: no match" in feedback
    assert "file_exists" not in feedback
    assert len(feedback) < 800
    assert validation_feedback(results[:1]) is None


def test_attempt_prompt_forms() -> None:
    assert attempt_prompt("task", feedback=None, resuming=False) == "task"
    assert attempt_prompt("task", feedback="fix it", resuming=False) == "task\n\nfix it"
    resumed = attempt_prompt("task", feedback=None, resuming=True)
    assert resumed.startswith(CONTINUE_NOTE) and resumed.endswith("\n\ntask")
    assert attempt_prompt("task", feedback="fix it", resuming=True).startswith("fix it\n\n")


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("written_for", "printed", "expected"),
    [
        ("Claude Code 2.1.x", "2.1.49 (Claude Code)", True),
        ("Claude Code 2.1.x", "2.0.76 (Claude Code)", False),
        ("codex-cli 0.14x (Rust)", "codex-cli 0.141.0", True),
        ("codex-cli 0.14x (Rust)", "codex-cli 0.125.0", False),
        ("goose 1.x, >=1.10", "1.12.0", True),
        ("goose 1.x, >=1.10", "1.9.3", False),
        ("GNU bash 5", "GNU bash, version 5.2.21(1)-release (x86_64-pc-linux-gnu)", True),
        ("gemini-cli 0.x (0.20 or later: stream-json)", "0.20.0", True),
        ("cursor-agent 2026.x", "2026.08.25-3e8eec8", True),
        ("my wrapper", "1.0", None),
        ("Claude Code 2.1.x", None, None),
        (None, "1.0", None),
    ],
)
def test_version_matches(
    written_for: str | None, printed: str | None, expected: bool | None
) -> None:
    assert version_matches(written_for, printed) is expected


@pytest.mark.parametrize(
    ("printed", "expected"),
    [("0.12.0", False), ("0.20.0", True), ("0.25.1", True), ("1.0.0", False)],
)
def test_the_gemini_profile_matches_only_the_versions_it_needs(
    printed: str, expected: bool
) -> None:
    """Its stream-json and `--resume` with a prompt on stdin need gemini-cli 0.20 or later:
    an older CLI must show as not the version the profile was written for."""
    written_for = builtin_profiles()["gemini-cli"].written_for
    assert version_matches(written_for, printed) is expected


def test_installed_version() -> None:
    assert installed_version("aider 0.86.1") == (0, 86, 1)
    assert installed_version("v1.2") == (1, 2)
    assert installed_version("no digits") is None


def test_instrument_view_shows_written_for_version_and_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, line in [("claude", "2.1.49 (Claude Code)"), ("codex", "codex-cli 0.125.0")]:
        exe = bindir / name
        exe.write_text(f"#!/bin/sh\necho '{line}'\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    catalog = InstrumentCatalog.load(None)
    views = {i.name: InstrumentView.from_info(i) for i in catalog.all()}
    claude, codex = views["claude-code"], views["codex-cli"]
    assert (claude.version, claude.written_for, claude.version_matches) == (
        "2.1.49 (Claude Code)", "Claude Code 2.1.x", True,
    )  # fmt: skip
    assert (codex.version, codex.version_matches) == ("codex-cli 0.125.0", False)
    dumped = claude.model_dump(mode="json")
    assert {"written_for", "version", "version_matches"} <= set(dumped)


def test_podium_instruments_shows_written_for_and_match(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "claude"
    exe.write_text("#!/bin/sh\necho '2.1.49 (Claude Code)'\n")
    exe.chmod(0o755)
    env = {**os.environ, "PODIUM_HOME": str(tmp_path / "home"),
           "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    done = run_podium(["instruments", "--json"], env, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)["instruments"]}
    assert rows["claude-code"]["written_for"] == "Claude Code 2.1.x"
    assert rows["claude-code"]["version_matches"] is True
    text = run_podium(["instruments"], env, timeout=60)
    assert "written for Claude Code 2.1.x: matches" in text.stdout


def test_podium_instruments_says_why_one_is_not_installed(tmp_path: Path) -> None:
    """What was looked for where, for each missing CLI (a user profile's absolute path too);
    an instrument that runs nothing (approval) has no version line."""
    home = tmp_path / "home"
    (home / "instruments").mkdir(parents=True)
    missing = tmp_path / "nowhere" / "my-cli"
    (home / "instruments" / "mine.yaml").write_text(
        f"name: mine\nexecutable: {missing}\nargs: ['{{prompt}}']\n"
    )
    bindir = tmp_path / "bin"  # PATH without any AI CLI
    bindir.mkdir()
    for tool in ("bash", "sh"):
        (bindir / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")
    env = {**os.environ, "PODIUM_HOME": str(home), "PATH": str(bindir)}
    done = run_podium(["instruments", "--json"], env, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)["instruments"]}
    assert rows["aider"]["unavailable_reason"] == "executable 'aider' was not found on PATH"
    assert rows["mine"]["unavailable_reason"] == (
        f"executable '{missing}' does not exist or is not executable"
    )
    assert rows["shell"]["available"] and rows["shell"]["unavailable_reason"] is None
    text = run_podium(["instruments"], env, timeout=60).stdout
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("codex-cli "))
    assert "not installed" in lines[at]
    assert lines[at + 1].strip() == "executable 'codex' was not found on PATH", text
    gate = next(i for i, line in enumerate(lines) if line.startswith("approval "))
    assert not lines[gate + 1].strip().startswith("written for"), text


@pytest.mark.parametrize(
    ("prompt_via", "args", "words"),
    [
        ("argv", ["-p"], "with prompt_via: argv, args must contain '{prompt}'"),
        ("file", ["--message-file", "prompt.txt"], "args must contain '{prompt_file}'"),
        ("stdin", ["-p", "{prompt}"], "with prompt_via: stdin it would reach the CLI as it is"),
        ("stdin", ["--file={prompt_file}"], "written only with prompt_via: file"),
        ("argv", ["{prompt}", "{prompt_file}"], "written only with prompt_via: file"),
    ],
)
def test_args_that_do_not_carry_the_prompt_are_refused(
    prompt_via: str, args: list[str], words: str
) -> None:
    """Else the CLI would run without its prompt (or with the placeholder's text for one)."""
    with pytest.raises(ValidationError, match=r"args: ") as caught:
        profile(prompt_via=prompt_via, args=args)
    assert words in str(caught.value)
    for fine_via, fine_args in [
        ("argv", ["-m", "--message={prompt}"]),
        ("file", ["--message-file", "{prompt_file}"]),
        ("stdin", ["-p"]),
    ]:
        assert profile(prompt_via=fine_via, args=fine_args).prompt_via == fine_via


def test_a_user_profile_that_would_lose_the_prompt_is_reported_and_the_builtin_stays(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    (home / "instruments").mkdir(parents=True)
    (home / "instruments" / "gemini.yaml").write_text(
        "name: gemini-cli\nexecutable: gemini\nargs: ['-p']\n"  # argv is the default
    )
    (home / "instruments" / "aider.yaml").write_text(
        "name: aider\nexecutable: my-aider\nprompt_via: stdin\nargs: ['--message', '-']\n"
    )
    env = {**os.environ, "PODIUM_HOME": str(home)}
    done = run_podium(["instruments", "--json"], env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert str(home / "instruments" / "gemini.yaml") in done.stderr
    assert "with prompt_via: argv, args must contain '{prompt}'" in done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)["instruments"]}
    assert rows["gemini-cli"]["source"] == "builtin"
    assert rows["aider"]["source"] == str(home / "instruments" / "aider.yaml")
    # A second file naming the same profile is reported too: only one of them can be used.
    (home / "instruments" / "zz-aider.yaml").write_text(
        "name: aider\nexecutable: my-aider\nprompt_via: stdin\nargs: []\n"
    )
    # With the conductor running, the answer is its view, and the refused files still show.
    assert run_podium(["start", "--detach"], env, timeout=60).returncode == 0
    try:
        done = run_podium(["instruments"], env, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "with prompt_via: argv, args must contain '{prompt}'" in done.stderr
        assert "names 'aider', as " in done.stderr and "zz-aider.yaml is used" in done.stderr
        assert f"[{home / 'instruments' / 'zz-aider.yaml'}]" in done.stdout
        log = (home / "logs" / "conductor.log").read_text()
        assert "instrument profile not loaded" in log and "gemini.yaml" in log
    finally:
        assert run_podium(["stop"], env, timeout=60).returncode == 0
