"""Pydantic models of a job spec (SPEC §4).

Every model forbids unknown fields so that a misspelt key is an error naming it instead of
a silently ignored setting. Cross-sheet checks (references, cycles, templates) need the
whole spec and are run by `loader.py`; these models only check what one value can tell.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from podium.core.spec.base import NonBlankStr, SpecModel, ValidationPath, is_templated
from podium.core.spec.conditions import SkipWhen, SkipWhenCommand
from podium.core.spec.hooks import ChainSpec, Notifications
from podium.core.spec.prompting import MAX_INJECTED_FILES, ContextSpec, Injection

DEFAULT_TIMEOUT_SECONDS = 1800
MAX_SHEETS = 10000
# The longest duration a spec may give (timeouts, backoff delays, deadlines, waits): a year.
# A duration becomes a moment (now + it) in the store; an unbounded one (1e300, YAML .inf)
# overflowed there and stopped the conductor.
MAX_DURATION_SECONDS = 365 * 24 * 3600

# Names the engine itself provides to templates; a spec variable with one of these names
# would be silently overridden, so it is rejected instead.
BUILTIN_TEMPLATE_VARIABLES = frozenset(
    {
        "workspace",
        "job_id",
        "sheet_num",
        "total_sheets",
        "sheet_name",
        "start_item",
        "end_item",
        "outputs",
        "stage",
        "instance",
        "fan_count",
        "previous_outputs",
        "previous_files",
    }
)

JOB_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
SHEET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Error type of the whole-spec form check; the loader reports the same problems with
# precise paths from the raw data, so it drops errors of this type.
FORM_ERROR_TYPE = "spec_form"


# --- instrument settings -------------------------------------------------------------------


def _env_name(name: str) -> str:
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(
            f"invalid environment variable name {name!r}: use letters, digits and '_', "
            "not starting with a digit"
        )
    return name


def _env_value(value: Any) -> Any:
    # YAML turns `PORT: 8080` into an int; the process environment only holds strings.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and "\0" in value:
        raise ValueError("environment values must not contain NUL characters")
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]
EnvValue = Annotated[str, BeforeValidator(_env_value)]


class InstrumentConfig(SpecModel):
    """Per-job defaults and per-sheet overrides; unset fields fall through to the profile."""

    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DURATION_SECONDS,
        description="kill the sheet after this long (default 1800)",
    )
    idle_timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DURATION_SECONDS,
        description="kill the sheet when it prints nothing for this long",
    )
    env: dict[EnvName, EnvValue] = Field(
        default_factory=dict,
        description="extra environment; merged key by key, never echoed",
        examples=[{"LOG_LEVEL": "debug"}],
    )
    model: str | None = Field(
        default=None, description="passed with the instrument's model flag (AI CLIs only)"
    )
    extra_args: list[str] = Field(
        default_factory=list, description="appended to the instrument's arguments"
    )
    permission_mode: str | None = Field(
        default=None,
        description="an AI CLI's non-interactive permission level, e.g. accept-edits, bypass, "
        "plan (see the instrument's profile)",
        examples=["accept-edits"],
    )

    def effective_timeout(self, profile_timeout: float | None = None) -> float:
        if self.timeout_seconds is not None:
            return self.timeout_seconds
        if profile_timeout is not None:
            return profile_timeout
        return DEFAULT_TIMEOUT_SECONDS


def merge_instrument_config(
    base: InstrumentConfig, override: InstrumentConfig | None
) -> InstrumentConfig:
    """`override`'s explicitly given fields win; `env` is merged key by key.

    The result remembers which fields were given in either block, so merging it again
    (e.g. over a profile's defaults) keeps the same precedence.
    """
    if override is None:
        return base
    values: dict[str, Any] = {
        name: getattr(base, name) for name in base.model_fields_set if name != "env"
    }
    values.update(
        {name: getattr(override, name) for name in override.model_fields_set if name != "env"}
    )
    if "env" in base.model_fields_set or "env" in override.model_fields_set:
        values["env"] = {**base.env, **override.env}
    return InstrumentConfig.model_validate(values)


# --- validations ---------------------------------------------------------------------------


MAX_PATTERN_CHARS = 4096
_PATH = "relative to the workspace (must stay inside it); a template"


class FileExistsValidation(SpecModel):
    type: Literal["file_exists"] = "file_exists"
    path: ValidationPath = Field(description=_PATH, examples=["out.txt"])


class FileModifiedValidation(SpecModel):
    """The file changed during this attempt."""

    type: Literal["file_modified"] = "file_modified"
    path: ValidationPath = Field(description=_PATH, examples=["out.txt"])


class ContentContainsValidation(SpecModel):
    type: Literal["content_contains"] = "content_contains"
    path: ValidationPath = Field(description=_PATH, examples=["out.txt"])
    pattern: str = Field(
        min_length=1, max_length=MAX_PATTERN_CHARS, description="plain substring", examples=["done"]
    )


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` is not a regular expression a `content_regex` can run, or None. Python's
    `re` refuses some patterns with other errors than `re.error`: a repeat count past its
    limit (`a{99999999999}`, OverflowError) or groups nested a thousand deep (RecursionError);
    both ended a submit, or an attempt, as an internal error."""
    try:
        # A FutureWarning (a nested set) is no reason to refuse a pattern.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        return str(exc)
    except OverflowError as exc:
        return str(exc)
    except RecursionError:
        return "groups are nested too deeply to compile"
    return None


class ContentRegexValidation(SpecModel):
    type: Literal["content_regex"] = "content_regex"
    path: ValidationPath = Field(description=_PATH, examples=["out.txt"])
    pattern: str = Field(
        min_length=1,
        max_length=MAX_PATTERN_CHARS,
        description="Python re.search, MULTILINE (run in linear time by RE2 where RE2 can, "
        "else under a time limit)",
        examples=["^[0-9]+$"],
    )

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str) -> str:
        # A templated pattern is only known after rendering: checked then (at submit when
        # the render is the real one, templating.check_templates; else by the runner).
        if not is_templated(value):
            problem = regex_problem(value)
            if problem is not None:
                raise ValueError(f"invalid regular expression: {problem}")
        return value


class CommandSucceedsValidation(SpecModel):
    type: Literal["command_succeeds"] = "command_succeeds"
    command: NonBlankStr = Field(
        description="bash command run in the workspace; exit 0 passes", examples=["test -s out.txt"]
    )
    timeout_seconds: float = Field(default=60, gt=0, le=MAX_DURATION_SECONDS)


Validation = Annotated[
    FileExistsValidation
    | FileModifiedValidation
    | ContentContainsValidation
    | ContentRegexValidation
    | CommandSucceedsValidation,
    Field(discriminator="type"),
]
VALIDATION_TYPES = (
    "file_exists",
    "file_modified",
    "content_contains",
    "content_regex",
    "command_succeeds",
)
# Which fields of each validation type are templates, rendered per sheet.
TEMPLATED_VALIDATION_FIELDS: dict[str, tuple[str, ...]] = {
    "file_exists": ("path",),
    "file_modified": ("path",),
    "content_contains": ("path", "pattern"),
    "content_regex": ("path", "pattern"),
    "command_succeeds": ("command",),
}


# --- sheets --------------------------------------------------------------------------------


def _sheet_ref(value: Any) -> int | str:
    # A plain validator instead of `int | str` keeps pydantic's union member names out of
    # error paths and rejects booleans, which YAML produces from `yes`/`no`.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip():
        return value.strip()
    # As the spec wrote it (JSON/YAML words), not as Python spells it.
    if isinstance(value, bool):
        got = "true" if value else "false"
    else:
        got = "null" if value is None else repr(value)
    raise PydanticCustomError(
        "sheet_ref", "must be a sheet number or a sheet name, got {got}", {"got": got}
    )


SheetRef = Annotated[int | str, PlainValidator(_sheet_ref, json_schema_input_type=int | str)]


def _not_all_digits(name: str) -> str:
    if name.isdigit():
        raise ValueError(
            f"sheet name {name!r} must not be only digits, so it cannot be mistaken for a "
            "sheet number"
        )
    return name


SheetName = Annotated[str, Field(pattern=SHEET_NAME_PATTERN), AfterValidator(_not_all_digits)]
InstrumentName = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class SheetSpec(SpecModel):
    name: SheetName | None = Field(
        default=None,
        description="unique label; depends_on and outputs can use it",
        examples=["build"],
    )
    prompt: NonBlankStr = Field(
        description="a template: the shell command, or the AI CLI's prompt",
        examples=["echo hello > out.txt"],
    )
    depends_on: list[SheetRef] = Field(
        default_factory=list,
        description="sheet numbers (1-based) or names that must complete first",
        examples=[[]],
    )
    instrument: InstrumentName | None = Field(
        default=None, description="overrides the job's instrument", examples=["shell"]
    )
    instrument_config: InstrumentConfig | None = Field(
        default=None, description="merged over the job's instrument_config"
    )
    validations: list[Validation] = Field(
        default_factory=list, description="checks after the run; all must pass"
    )
    fan_out: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SHEETS,
        description="run as N parallel instances (named NAME-1..NAME-N; templates see stage, "
        "instance, fan_count); a dependent waits for every instance",
        examples=[3],
    )
    fallbacks: list[InstrumentName] | None = Field(
        default=None,
        description="instruments to try in order when this sheet's instrument is unavailable, "
        "rate-limited past fallback_wait_seconds, or fails on auth or billing; replaces the "
        "job's list ([]: none)",
        examples=[["shell"]],
    )
    cadenzas: list[Injection] = Field(
        default_factory=list,
        max_length=MAX_INJECTED_FILES,
        description="files whose contents go into this sheet's prompt (prompt assembly)",
        examples=[[{"file": "style.md", "as": "skill"}]],
    )
    skip_when: SkipWhen | None = None
    skip_when_command: SkipWhenCommand | None = Field(
        default=None, description="a command run first: exit 0 skips the sheet"
    )


FanCount = Annotated[int, Field(ge=1, le=MAX_SHEETS)]


class BatchSheetSpec(SpecModel):
    """Items 1..total_items split into sheets of `size`; the last one may be shorter."""

    size: int = Field(ge=1, description="items per sheet", examples=[5])
    total_items: int = Field(
        ge=1, description="items 1..total_items are split into sheets", examples=[12]
    )
    dependencies: dict[SheetRef, list[SheetRef]] = Field(
        default_factory=dict,
        description="sheet number -> the sheet numbers it waits for",
        examples=[{"3": [1, 2]}],
    )
    fan_out: dict[SheetRef, FanCount] = Field(
        default_factory=dict,
        description="sheet (stage) number -> instances run in parallel; with fan_out, "
        "dependencies are between stages",
        examples=[{"2": 3}],
    )
    skip_when: dict[SheetRef, SkipWhen] = Field(
        default_factory=dict,
        description="sheet (stage) number -> expression; true skips that sheet",
        examples=[{"3": "sheets[2].status == 'completed'"}],
    )
    skip_when_command: dict[SheetRef, SkipWhenCommand] = Field(
        default_factory=dict,
        description="sheet (stage) number -> a command; exit 0 skips it",
        examples=[{"1": {"command": "test -f skip.txt"}}],
    )

    @property
    def sheet_count(self) -> int:
        """Sheets before fan-out (stages)."""
        return math.ceil(self.total_items / self.size)

    @model_validator(mode="after")
    def _not_too_many(self) -> BatchSheetSpec:
        if self.sheet_count > MAX_SHEETS:
            raise ValueError(
                f"{self.total_items} items in sheets of {self.size} make {self.sheet_count} "
                f"sheets; at most {MAX_SHEETS} are allowed (use a larger size)"
            )
        return self


class PromptTemplate(SpecModel):
    template: NonBlankStr = Field(
        description="rendered per sheet with start_item, end_item, sheet_num, total_sheets",
        examples=["echo items {{ start_item }}-{{ end_item }}"],
    )


# --- job -----------------------------------------------------------------------------------


class RetryPolicy(SpecModel):
    max_retries: int = Field(default=2, ge=0, le=100, description="up to N+1 attempts")
    base_delay_seconds: float = Field(default=2, ge=0, le=MAX_DURATION_SECONDS)
    max_delay_seconds: float = Field(default=120, ge=0, le=MAX_DURATION_SECONDS)
    jitter: bool = True


class ConcurrencySpec(SpecModel):
    max_parallel_sheets: int = Field(default=4, ge=1, le=256)


def _not_builtin(name: str) -> str:
    if name in BUILTIN_TEMPLATE_VARIABLES:
        raise ValueError(
            f"variable {name!r} would shadow the built-in template variable of that name; "
            "choose another name"
        )
    return name


VariableName = Annotated[str, StringConstraints(min_length=1), AfterValidator(_not_builtin)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64)]


def form_errors(
    *, has_sheets: bool, has_sheet: bool, has_prompt: bool, names: list[object]
) -> list[tuple[str, str]]:
    """(path, message) for a spec that does not pick exactly one sheet form, or reuses a
    sheet name. Shared by the model (whole-model check) and the loader (raw data, so the
    problems are reported even when other fields fail validation)."""
    problems: list[tuple[str, str]] = []
    both = "give either 'sheets' (explicit form) or 'sheet' + 'prompt' (batch form)"
    if has_sheets and (has_sheet or has_prompt):
        extra = " and ".join(k for k, v in (("sheet", has_sheet), ("prompt", has_prompt)) if v)
        problems.append(("", f"{both}, not both: found 'sheets' and {extra}"))
    elif not has_sheets and not has_sheet and not has_prompt:
        problems.append(("", f"{both}; found neither"))
    elif has_sheet and not has_prompt:
        problems.append(("prompt", "the batch form needs 'prompt' ({template: ...}) with 'sheet'"))
    elif has_prompt and not has_sheet:
        problems.append(
            ("sheet", "the batch form needs 'sheet' ({size, total_items}) with 'prompt'")
        )
    first_use: dict[str, int] = {}
    for index, name in enumerate(names):
        if not isinstance(name, str):
            continue
        if name in first_use:
            problems.append(
                (
                    f"sheets.{index}.name",
                    f"duplicate sheet name {name!r} (already used by sheets.{first_use[name]}); "
                    "sheet names must be unique within a job",
                )
            )
        else:
            first_use[name] = index
    return problems


class JobSpec(SpecModel):
    """A Podium job spec: give either `sheets` (explicit form) or `sheet` + `prompt` (batch
    form)."""

    model_config = ConfigDict(
        extra="forbid",
        title="Podium job spec",
        json_schema_extra={"oneOf": [{"required": ["sheets"]}, {"required": ["sheet", "prompt"]}]},
    )

    name: str = Field(pattern=JOB_NAME_PATTERN, examples=["nightly-review"])
    description: str | None = None
    labels: list[Label] = Field(
        default_factory=list, description="list_jobs can filter by label", examples=[["nightly"]]
    )
    workspace: str | None = Field(
        default=None,
        min_length=1,
        description="the sheets' working directory; relative to the spec file's folder, or "
        "to <home>/workspaces for an inline spec; must be inside an allowed root "
        "(default: <home>/workspaces/<job_id>)",
        examples=["my-work"],
    )
    instrument: InstrumentName = Field(
        default="shell",
        description="how sheets run: shell, claude-code, gemini-cli, codex-cli, aider, goose, "
        "opencode, or a user profile",
        examples=["shell"],
    )
    instrument_config: InstrumentConfig = Field(
        default_factory=InstrumentConfig, description="defaults for every sheet"
    )
    variables: dict[VariableName, Any] = Field(
        default_factory=dict,
        description="template variables for every sheet",
        examples=[{"repo": "my-project"}],
    )
    sheets: list[SheetSpec] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SHEETS,
        description="explicit form: the sheets, numbered from 1",
    )
    sheet: BatchSheetSpec | None = Field(default=None, description="batch form, with prompt")
    prompt: PromptTemplate | None = Field(
        default=None, description="batch form only: the prompt template of every sheet"
    )
    validations: list[Validation] = Field(
        default_factory=list, description="applied to every sheet, after its own"
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    concurrency: ConcurrencySpec = Field(default_factory=ConcurrencySpec)
    priority: int = Field(default=5, ge=1, le=10, description="1 is the most urgent")
    on_failure: Literal["stop", "continue"] = Field(
        default="stop",
        description="stop: a failure skips every sheet not yet started; continue: only the "
        "failed sheet's dependents are skipped",
    )
    deadline_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DURATION_SECONDS,
        description='the job fails with reason "deadline" after this long',
    )
    prompt_assembly: bool = Field(
        default=True,
        description="an AI CLI's prompt also carries the prelude, cadenzas, context and the "
        "checks it must pass, and a retry after failed checks names them with the end of the "
        "last output; never for shell",
    )
    prelude: list[Injection] = Field(
        default_factory=list,
        max_length=MAX_INJECTED_FILES,
        description="files whose contents go into every AI sheet's prompt",
        examples=[["guide.md"]],
    )
    context: ContextSpec | None = Field(
        default=None, description="earlier sheets' output and files for later sheets"
    )
    notifications: Notifications | None = Field(
        default=None, description="commands, webhooks or desktop notices when the job ends"
    )
    on_success: ChainSpec | None = Field(
        default=None, description="submit a follow-up spec when the job completes"
    )
    fallbacks: list[InstrumentName] = Field(
        default_factory=list,
        description="every sheet's fallback instruments (a sheet's own list replaces it)",
        examples=[["shell"]],
    )
    fallback_wait_seconds: float = Field(
        default=600,
        ge=0,
        le=MAX_DURATION_SECONDS,
        description="a rate-limit wait longer than this moves a sheet with fallbacks to its "
        "next instrument instead (0: any rate limit)",
    )
    cost_limit_usd: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="the job pauses (pause_reason cost_limit) once the cost its instruments "
        "report passes this many US dollars",
    )
    hosts: list[Label] = Field(
        default_factory=list,
        description="several conductors on one store: only conductors carrying one of these "
        "labels (their host_labels, conductor_id or host name) run this job's sheets; empty: "
        "any conductor",
        examples=[["gpu-box"]],
    )

    @field_validator("labels", "hosts")
    @classmethod
    def _unique_labels(cls, labels: list[str]) -> list[str]:
        seen: set[str] = set()
        for label in labels:
            if label in seen:
                raise ValueError(f"duplicate label {label!r}; labels must be unique")
            seen.add(label)
        return labels

    @model_validator(mode="after")
    def _one_sheet_form(self) -> JobSpec:
        problems = form_errors(
            has_sheets=self.sheets is not None,
            has_sheet=self.sheet is not None,
            has_prompt=self.prompt is not None,
            names=[s.name for s in self.sheets or []],
        )
        if problems:
            text = "; ".join(f"{path}: {msg}" if path else msg for path, msg in problems)
            raise PydanticCustomError(FORM_ERROR_TYPE, text)
        return self

    @property
    def stage_count(self) -> int:
        """Sheets as declared, before fan-out: what dependencies refer to."""
        if self.sheets is not None:
            return len(self.sheets)
        assert self.sheet is not None  # guaranteed by _one_sheet_form
        return self.sheet.sheet_count


def spec_json_schema() -> dict[str, Any]:
    """The job spec's JSON Schema (served as `podium://spec/schema`), from the same models
    that validate specs, so it can never drift from what `validate_spec` accepts."""
    schema = JobSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
