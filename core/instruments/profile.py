"""Instrument profiles (SPEC §5): how a rendered prompt becomes a command line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from podium.core.spec.models import InstrumentConfig

PROMPT_PLACEHOLDER = "{prompt}"
PROMPT_FILE_PLACEHOLDER = "{prompt_file}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from exc
    return value


class RateLimitPattern(_Strict):
    regex: str
    # Name of a group in `regex` that captures the wait in seconds.
    retry_after_group: str | None = None

    _regex_ok = field_validator("regex")(_check_regex)


class Patterns(_Strict):
    """Regexes searched (case-insensitively) in the output of FAILED runs only."""

    streams: list[Literal["stdout", "stderr"]] = Field(default=["stdout", "stderr"])
    rate_limit: list[RateLimitPattern] = Field(default_factory=list)
    auth: list[str] = Field(default_factory=list)
    transient: list[str] = Field(default_factory=list)

    @field_validator("auth", "transient")
    @classmethod
    def _regexes(cls, values: list[str]) -> list[str]:
        return [_check_regex(v) for v in values]


class OutputSpec(_Strict):
    format: Literal["text", "json", "jsonl"] = "text"
    # Dotted path to the answer in the JSON output (jsonl: in the last line that has it); the
    # answer becomes the sheet's output (`outputs[N]`, `output_tail`).
    result_path: str | None = None
    # Dotted path to a flag some CLIs set when they fail but exit 0 (e.g. Claude's
    # `is_error`); a true value makes the run a failed run.
    error_path: str | None = None


class CheckSpec(_Strict):
    version_args: list[str] = Field(default_factory=lambda: ["--version"])


class InstrumentProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    description: str = ""
    written_for: str | None = None
    executable: str
    args: list[str] = Field(default_factory=lambda: [PROMPT_PLACEHOLDER])
    prompt_via: Literal["argv", "stdin", "file"] = "argv"
    model_flag: str | None = None
    permission_flags: dict[str, list[str]] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(1800, gt=0)
    success_exit_codes: list[int] = Field(default_factory=lambda: [0])
    output: OutputSpec = Field(default_factory=OutputSpec)
    patterns: Patterns = Field(default_factory=Patterns)
    check: CheckSpec | None = None


def applicable_config(config: InstrumentConfig, profile: InstrumentProfile) -> InstrumentConfig:
    """Drop settings the instrument has no notion of: a job-level `permission_mode` or
    `model` meant for the AI sheets must not break a `shell` sheet. (Set on a sheet itself,
    or a mode the instrument does not know, is refused when the spec is validated.)"""
    drop: dict[str, None] = {}
    if config.permission_mode is not None and not profile.permission_flags:
        drop["permission_mode"] = None
    if config.model is not None and profile.model_flag is None:
        drop["model"] = None
    return config.model_copy(update=drop) if drop else config


@dataclass(frozen=True)
class Invocation:
    argv: list[str]
    stdin_data: bytes | None
    prompt_file: Path | None


class InvocationError(ValueError):
    pass


def build_invocation(
    profile: InstrumentProfile,
    prompt: str,
    *,
    model: str | None,
    permission_mode: str | None,
    extra_args: list[str],
    prompt_file: Path,
) -> Invocation:
    """The exact argv for one attempt. Substitution is literal (no shell, no str.format), so
    quotes, newlines and `$(...)` in a prompt reach the CLI unchanged."""
    argv = [profile.executable]
    for arg in profile.args:
        arg = arg.replace(PROMPT_FILE_PLACEHOLDER, str(prompt_file))
        if profile.prompt_via == "argv":
            arg = arg.replace(PROMPT_PLACEHOLDER, prompt)
        argv.append(arg)
    if model:
        if not profile.model_flag:
            raise InvocationError(f"instrument {profile.name!r} has no model flag; remove `model`")
        argv += [profile.model_flag, model]
    if permission_mode:
        flags = profile.permission_flags.get(permission_mode)
        if flags is None:
            allowed = ", ".join(sorted(profile.permission_flags)) or "none"
            raise InvocationError(
                f"instrument {profile.name!r} has no permission mode {permission_mode!r} "
                f"(allowed: {allowed})"
            )
        argv += flags
    argv += extra_args
    written_file = None
    if profile.prompt_via == "file":
        prompt_file.parent.mkdir(parents=True, exist_ok=True)
        prompt_file.write_text(prompt)
        written_file = prompt_file
    stdin_data = prompt.encode() if profile.prompt_via == "stdin" else None
    return Invocation(argv=argv, stdin_data=stdin_data, prompt_file=written_file)
