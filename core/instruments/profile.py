"""Instrument profiles (SPEC §5): how a rendered prompt becomes a command line, and how the
CLI's output is read (answer, failure classes, reset times, session id, cost)."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

from podium.core.instruments.jsondocs import JsonSelector, Scalar
from podium.core.instruments.resets import ResetKind, zone_named
from podium.core.spec.models import MAX_DURATION_SECONDS, InstrumentConfig
from podium.core.spec.numbers import NumbersNotBooleans

PROMPT_PLACEHOLDER = "{prompt}"
PROMPT_FILE_PLACEHOLDER = "{prompt_file}"
SESSION_ID_PLACEHOLDER = "{session_id}"
# An `args` element that is replaced by the session's resume arguments (or by nothing on a
# fresh attempt), for CLIs whose resume is a subcommand that must come first (amp).
RESUME_ARGS_MARKER = "{resume_args}"
# A session id reaches the CLI's argv: it must not be mistaken for an option or carry junk.
_SESSION_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:\-]{0,199}$")
_POOL_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class _Strict(NumbersNotBooleans):
    """Unknown fields are refused, and a boolean is never read as a number (`timeout_seconds:
    yes`, `success_exit_codes: [true]`): a profile is YAML a user writes."""

    model_config = ConfigDict(extra="forbid")


# As a spec's `content_regex` pattern: a failure pattern is a phrase, not a program.
MAX_PATTERN_CHARS = 4096


def _check_regex(value: str) -> str:
    """Refused at load, so a broken pattern names its key instead of failing runs. Only
    compiled here: matching is what backtracks, and the runner never matches a profile's
    regex on Python's `re` in the conductor (runner/regex.py)."""
    if len(value) > MAX_PATTERN_CHARS:
        raise ValueError(
            f"a regular expression of at most {MAX_PATTERN_CHARS} characters is allowed "
            f"(got {len(value)})"
        )
    try:
        # A FutureWarning (a nested set) is no reason to refuse a pattern.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re.compile(value, re.IGNORECASE | re.MULTILINE)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


# One list entry each, so an error names its index (`patterns.auth.1`).
Regex = Annotated[str, AfterValidator(_check_regex)]


class ResetSpec(_Strict):
    """Where a rate-limit message says when the limit lifts, and in which form."""

    # seconds | duration ("2 days 17 hours", "1h49m") | clock ("1pm (Europe/Lisbon)",
    # "Apr 23 at 4pm": the next such moment) | epoch | auto (told apart by shape)
    kind: ResetKind = "auto"
    group: str | None = None  # a named group of the pattern's `regex`
    path: str | None = None  # a dotted path in the JSON event a `json_where` pattern matched
    value: str | None = None  # a fixed moment, for limits that always lift at one time
    zone_group: str | None = None  # a group holding an IANA zone name for a clock time
    # The zone of a clock time that names none; default: the conductor's local zone (CLIs
    # print clock times in the zone of the machine they run on).
    zone: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ResetSpec:
        given = [n for n in ("group", "path", "value") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `group`, `path` or `value`")
        if self.zone is not None and zone_named(self.zone) is None:
            raise ValueError(f"zone {self.zone!r} is not a known IANA time zone")
        return self


class RateLimitPattern(_Strict):
    """A match means "wait, then retry without spending a retry". Either a regex over the
    failed run's text, or (json/jsonl output) the conditions a JSON event must meet."""

    regex: Regex | None = None
    json_where: dict[str, Scalar] | None = None
    # Legacy form of `reset: {kind: seconds, group: NAME}`.
    retry_after_group: str | None = None
    reset: ResetSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RateLimitPattern:
        if (self.regex is None) == (self.json_where is None):
            raise ValueError("give exactly one of `regex` or `json_where`")
        if self.json_where is not None and not self.json_where:
            raise ValueError("`json_where` needs at least one condition")
        if self.retry_after_group is not None and self.reset is not None:
            raise ValueError("give `reset` or the older `retry_after_group`, not both")
        groups = {}
        if self.regex is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                groups = dict(re.compile(self.regex).groupindex)
        spec = self.reset_spec
        if spec is not None:
            if self.regex is None and (spec.group or spec.zone_group):
                raise ValueError("a `json_where` pattern takes its reset from `path`, not a group")
            if self.regex is not None and spec.path is not None:
                raise ValueError("a `regex` pattern takes its reset from a `group`, not a `path`")
            for name in (spec.group, spec.zone_group):
                if name is not None and name not in groups:
                    raise ValueError(f"group {name!r} is not a named group of `regex`")
        return self

    @property
    def reset_spec(self) -> ResetSpec | None:
        if self.retry_after_group is not None:
            return ResetSpec(kind="seconds", group=self.retry_after_group)
        return self.reset


class Patterns(_Strict):
    """Regexes searched (case-insensitively) in the output of FAILED runs only, in this order:
    billing, rate_limit, auth, transient (the first class with a match wins). Python `re`
    syntax, run by RE2 in linear time where it means the same, else under a time limit."""

    streams: list[Literal["stdout", "stderr"]] = Field(default=["stdout", "stderr"])
    # Out of credits / plan or billing exhausted: waiting cannot help, the run fails at once
    # with error_category `billing`.
    billing: list[Regex] = Field(default_factory=list)
    rate_limit: list[RateLimitPattern] = Field(default_factory=list)
    auth: list[Regex] = Field(default_factory=list)
    transient: list[Regex] = Field(default_factory=list)


class OutputSpec(_Strict):
    format: Literal["text", "json", "jsonl"] = "text"
    # Where the answer is in the JSON output (jsonl: by default the last event that has it);
    # the answer becomes the sheet's output (`outputs[N]`, `output_tail`).
    result_path: JsonSelector | None = None
    # A flag some CLIs set when they fail but exit 0 (e.g. Claude's `is_error`); a true
    # (non-empty) value makes the run a failed run.
    error_path: JsonSelector | None = None


class CheckSpec(_Strict):
    version_args: list[str] = Field(default_factory=lambda: ["--version"])


class PermissionMode(_Strict):
    """What one permission mode adds: flags, environment variables, or both. Written as a
    plain list, it is `args`."""

    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        return {"args": data} if isinstance(data, list) else data


class SessionSpec(_Strict):
    """How a retry continues the CLI's own session instead of starting from nothing."""

    id_path: JsonSelector  # where the CLI reports its session id
    resume_args: list[str]  # e.g. ["--resume", "{session_id}"]

    @field_validator("resume_args")
    @classmethod
    def _names_the_id(cls, value: list[str]) -> list[str]:
        if not any(SESSION_ID_PLACEHOLDER in arg for arg in value):
            raise ValueError(f"must contain {SESSION_ID_PLACEHOLDER!r}")
        return value


class UsageSpec(_Strict):
    """Where the CLI reports what a run cost, as it reports it (no prices are guessed)."""

    cost_usd_path: JsonSelector | None = None
    input_tokens_path: JsonSelector | None = None
    output_tokens_path: JsonSelector | None = None
    cache_read_tokens_path: JsonSelector | None = None
    cache_write_tokens_path: JsonSelector | None = None


APPROVAL_KIND = "approval"


class InstrumentProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    description: str = ""
    written_for: str | None = None
    # `process` runs `executable`; `approval` runs nothing and waits for a person's decision
    # (its prompt is the question; `timeout_seconds` bounds the wait).
    kind: Literal["process", "approval"] = "process"
    executable: str = ""
    args: list[str] = Field(default_factory=lambda: [PROMPT_PLACEHOLDER])
    prompt_via: Literal["argv", "stdin", "file"] = "argv"
    model_flag: str | None = None
    permission_flags: dict[str, PermissionMode] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(1800, gt=0, le=MAX_DURATION_SECONDS)
    success_exit_codes: list[int] = Field(default_factory=lambda: [0])
    output: OutputSpec = Field(default_factory=OutputSpec)
    patterns: Patterns = Field(default_factory=Patterns)
    check: CheckSpec | None = None
    # Profiles drawing on one account name one pool; a rate limit on any of them holds all.
    quota_pool: str | None = Field(None, pattern=_POOL_NAME)
    session: SessionSpec | None = None
    usage: UsageSpec | None = None
    # A retry after failed validations tells the CLI which checks failed (in its prompt).
    # Off for instruments whose prompt is a program rather than a request (shell): text added
    # to a script would run as commands.
    retry_feedback: bool = True

    @model_validator(mode="after")
    def _structured_needs_json(self) -> InstrumentProfile:
        if self.kind == "process" and not self.executable:
            raise ValueError("executable: a process instrument needs an executable")
        if "/" in self.executable and not self.executable.startswith("/"):
            # Found (or not) from the conductor's working directory, but run from each
            # sheet's workspace: the two would name different files.
            raise ValueError(
                f"executable: {self.executable!r} is a relative path, which would be looked "
                "for in each sheet's workspace; give a command name (looked up on PATH) or "
                "an absolute path (~ is not expanded)"
            )
        if self.output.format == "text":
            needs = [
                name
                for name, used in (
                    ("output.result_path", self.output.result_path is not None),
                    ("output.error_path", self.output.error_path is not None),
                    ("session", self.session is not None),
                    ("usage", self.usage is not None),
                    (
                        "patterns.rate_limit json_where",
                        any(p.json_where is not None for p in self.patterns.rate_limit),
                    ),
                )
                if used
            ]
            if needs:
                raise ValueError(
                    f"{', '.join(needs)} read JSON output: set output.format to json or jsonl"
                )
        if self.kind == "process":
            problem = _prompt_route_problem(self.prompt_via, self.args)
            if problem is not None:
                raise ValueError(problem)
        if self.args.count(RESUME_ARGS_MARKER) > 1:
            raise ValueError(f"{RESUME_ARGS_MARKER!r} may appear in args at most once")
        if RESUME_ARGS_MARKER in self.args and self.session is None:
            raise ValueError(f"{RESUME_ARGS_MARKER!r} in args needs a `session` block")
        return self


def _prompt_route_problem(prompt_via: str, args: list[str]) -> str | None:
    """A profile whose `args` do not match `prompt_via` would run the CLI without its prompt
    (or with the placeholder's text instead of it)."""
    has_prompt = any(PROMPT_PLACEHOLDER in a for a in args)
    has_file = any(PROMPT_FILE_PLACEHOLDER in a for a in args)
    if prompt_via == "argv" and not has_prompt:
        return (
            f"args: with prompt_via: argv, args must contain {PROMPT_PLACEHOLDER!r} (where the "
            "prompt goes); or set prompt_via: stdin or file"
        )
    if prompt_via == "file" and not has_file:
        return (
            f"args: with prompt_via: file, args must contain {PROMPT_FILE_PLACEHOLDER!r} (the "
            "path of the file holding the prompt)"
        )
    if prompt_via != "argv" and has_prompt:
        return (
            f"args: {PROMPT_PLACEHOLDER!r} is replaced only with prompt_via: argv; with "
            f"prompt_via: {prompt_via} it would reach the CLI as it is"
        )
    if prompt_via != "file" and has_file:
        return (
            f"args: {PROMPT_FILE_PLACEHOLDER!r} names the prompt's file, which is written only "
            f"with prompt_via: file (this profile has prompt_via: {prompt_via})"
        )
    return None


def hold_key(profile: InstrumentProfile) -> str:
    """The name a rate-limit hold is kept under: the quota pool, else the instrument."""
    return profile.quota_pool or profile.name


def usable_session_id(value: Any) -> str | None:
    """A session id as reported, when it is safe to put on a command line."""
    if isinstance(value, str) and _SESSION_ID.match(value):
        return value
    return None


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
    # Variables the permission mode sets (they win over the profile's and the sheet's env).
    env: dict[str, str] = field(default_factory=dict)
    # The session this attempt continues, when the profile could resume it.
    resumed_session_id: str | None = None


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
    resume_session_id: str | None = None,
) -> Invocation:
    """The exact argv for one attempt. Substitution is literal (no shell, no str.format), so
    quotes, newlines and `$(...)` in a prompt reach the CLI unchanged.

    With `resume_session_id` (and a profile that can resume), the profile's resume arguments
    go where `args` has the `{resume_args}` marker, else after everything else (a resume
    subcommand such as codex's `resume ID -` must follow the options)."""
    resumed = usable_session_id(resume_session_id) if profile.session is not None else None
    resume: list[str] = []
    if resumed is not None and profile.session is not None:
        resume = [a.replace(SESSION_ID_PLACEHOLDER, resumed) for a in profile.session.resume_args]
    argv = [profile.executable]
    for arg in profile.args:
        if arg == RESUME_ARGS_MARKER:
            argv += resume
            resume = []
            continue
        arg = arg.replace(PROMPT_FILE_PLACEHOLDER, str(prompt_file))
        if profile.prompt_via == "argv":
            arg = arg.replace(PROMPT_PLACEHOLDER, prompt)
        argv.append(arg)
    if model:
        if not profile.model_flag:
            raise InvocationError(f"instrument {profile.name!r} has no model flag; remove `model`")
        argv += [profile.model_flag, model]
    mode_env: dict[str, str] = {}
    if permission_mode:
        mode = profile.permission_flags.get(permission_mode)
        if mode is None:
            allowed = ", ".join(sorted(profile.permission_flags)) or "none"
            raise InvocationError(
                f"instrument {profile.name!r} has no permission mode {permission_mode!r} "
                f"(allowed: {allowed})"
            )
        argv += mode.args
        mode_env = dict(mode.env)
    argv += extra_args
    argv += resume
    written_file = None
    if profile.prompt_via == "file":
        prompt_file.parent.mkdir(parents=True, exist_ok=True)
        prompt_file.write_text(prompt)
        written_file = prompt_file
    stdin_data = prompt.encode() if profile.prompt_via == "stdin" else None
    return Invocation(
        argv=argv,
        stdin_data=stdin_data,
        prompt_file=written_file,
        env=mode_env,
        resumed_session_id=resumed,
    )
