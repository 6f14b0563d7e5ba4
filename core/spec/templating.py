"""Jinja2 templates for prompts and validation fields (SPEC §4).

One sandboxed environment: specs come from agents and users, so templates must not reach
Python internals. Undefined names are errors rather than empty strings, because an empty
path or prompt would run the wrong thing silently.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError

from podium.core.errors import FieldError, PodiumError, quoted
from podium.core.spec.base import is_templated
from podium.core.spec.models import (
    BUILTIN_TEMPLATE_VARIABLES,
    TEMPLATED_VALIDATION_FIELDS,
    JobSpec,
    Validation,
    regex_problem,
)
from podium.core.spec.sandbox import (
    RENDER_SECONDS,
    BoundedSandbox,
    guard_filter,
    render_budget,
)


class SheetLike(Protocol):
    """What rendering needs of a sheet; `loader.ResolvedSheet` is the real one (not imported
    here because the loader imports this module)."""

    @property
    def sheet_num(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    @property
    def prompt(self) -> str: ...
    @property
    def start_item(self) -> int | None: ...
    @property
    def end_item(self) -> int | None: ...
    @property
    def stage(self) -> int: ...
    @property
    def instance(self) -> int: ...
    @property
    def fan_count(self) -> int: ...


_TEMPLATE_NAME = "<template>"
PLACEHOLDER_WORKSPACE = "/workspace-placeholder"
PLACEHOLDER_JOB_ID = "job-placeholder"

# Checking renders every template of every sheet (up to 10,000): the whole check has this
# budget, each render its own RENDER_SECONDS.
CHECK_SECONDS = 5.0

ErrorKind = Literal["syntax", "undefined", "outputs", "security", "error"]


class TemplateRenderError(PodiumError):
    """A template failed to compile or render; `kind` tells the loader which failures are
    mistakes in the spec and which may only come from placeholder values at check time."""

    def __init__(self, message: str, *, kind: ErrorKind = "error", line: int | None = None):
        self.kind: ErrorKind = kind
        self.line = line
        super().__init__(message)


def shell_quote(value: object) -> str:
    return shlex.quote(str(value))


environment = BoundedSandbox(
    autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True
)
environment.filters["shell_quote"] = guard_filter(shell_quote)


def _json_default(value: object) -> object:
    # `outputs` and `previous_outputs` are read-only mappings of their own (they refuse
    # non-ancestors): `tojson` failed on them with "Object of type _Outputs is not JSON
    # serializable", failing the sheet at run time.
    if isinstance(value, Mapping):
        return {str(key): value[key] for key in value}
    raise TypeError(f"a {type(value).__name__} cannot be written as JSON")


environment.policies["json.dumps_kwargs"] = {"sort_keys": True, "default": _json_default}


@dataclass
class TemplateContext:
    workspace: str
    job_id: str
    sheet_num: int
    total_sheets: int
    sheet_name: str | None
    start_item: int | None
    end_item: int | None
    variables: Mapping[str, Any]
    # Stdout tails of the sheet's transitive ancestors; other sheets are refused.
    outputs: Mapping[int, str]
    # Sheet names -> numbers, so `outputs.build` and `outputs['build']` work like `outputs[1]`.
    sheet_names: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # Fan-out: the declared sheet this one is an instance of, and which (1..fan_count).
    stage: int = 0
    instance: int = 1
    fan_count: int = 1
    # Cross-sheet context (`context` in the spec): earlier sheets' stdout by number, and the
    # captured files by their path as written.
    previous_outputs: Mapping[int, str] = dataclasses.field(default_factory=dict)
    previous_files: Mapping[str, str] = dataclasses.field(default_factory=dict)


class _NotAncestorError(Exception):
    # Deliberately not a LookupError: Jinja turns those into an undefined value, which
    # would hide the reason behind "has no element N".
    def __init__(self, message: str) -> None:
        super().__init__(message)


class _Outputs(Mapping[int, str]):
    """`outputs` in templates: by sheet number or name, ancestors only."""

    def __init__(
        self,
        source: Mapping[int, str],
        sheet_num: int,
        names: Mapping[str, int] | None = None,
        total: int | None = None,
    ) -> None:
        self._source = source
        self._sheet_num = sheet_num
        self._names = names or {}
        self._total = total

    def _key(self, key: object) -> object:
        if isinstance(key, str) and key.isdigit():
            return int(key)
        if isinstance(key, str) and key in self._names:
            return self._names[key]
        return key

    def __getitem__(self, key: object) -> str:
        normal = self._key(key)
        if isinstance(normal, int) and normal in self._source:
            return self._source[normal]
        if isinstance(normal, int) and not isinstance(normal, bool):
            if normal < 1 or (self._total is not None and normal > self._total):
                numbered = f"1 to {self._total}" if self._total is not None else "from 1"
                raise _NotAncestorError(
                    f"outputs[{key!r}]: there is no sheet {normal} (sheets are numbered {numbered})"
                )
            named = f"sheet {key!r} (sheet {normal})" if normal != key else f"sheet {normal}"
            raise _NotAncestorError(
                f"outputs[{key!r}]: {named} is not an ancestor of sheet {self._sheet_num}; "
                "add it to depends_on"
            )
        names = ", ".join(sorted(self._names)) or "none"
        raise _NotAncestorError(
            f"outputs[{key!r}]: no sheet named {key!r}; use an ancestor's number or name "
            f"(sheet names: {names})"
        )

    def __contains__(self, key: object) -> bool:
        normal = self._key(key)
        return isinstance(normal, int) and normal in self._source

    def __iter__(self) -> Iterator[int]:
        return iter(self._source)

    def __len__(self) -> int:
        return len(self._source)


# Tags that load another template file. A Podium template is one text with no loader
# beside it, so each of these fails every render; refused at parse, not at run time.
_FILE_TAGS: tuple[tuple[type[nodes.Node], str], ...] = (
    (nodes.Include, "include"),
    (nodes.Extends, "extends"),
    (nodes.Import, "import"),
    (nodes.FromImport, "from ... import"),
)


def _refuse_file_tags(ast: nodes.Template) -> None:
    for kind, tag in _FILE_TAGS:
        node = next(iter(ast.find_all(kind)), None)
        if node is not None:
            raise TemplateSyntaxError(
                f"{{% {tag} %}} is not supported: Podium templates have no template files "
                "to read; write the text into the template itself (a macro defined in it "
                "works), or give a file to the sheet as a prelude or cadenza",
                node.lineno,
            )


@lru_cache(maxsize=1024)
def compile_template(source: str) -> Template:
    """Compiled once per distinct source: a batch prompt renders for every sheet."""
    try:
        ast = environment.bounded_parse(source)
        _refuse_file_tags(ast)
        return environment.from_string(ast)
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(
            f"template syntax error at line {exc.lineno}: {exc.message}",
            kind="syntax",
            line=exc.lineno,
        ) from None
    except RecursionError:
        # Jinja's parser and compiler recurse per level: `{{ ((((...1)))) }}` 5,000 deep
        # reached the tool as "the input is nested too deep", naming no field.
        raise TemplateRenderError(
            "template syntax error: expressions or blocks are nested too deeply to compile",
            kind="syntax",
        ) from None


_GUARD_TESTS = frozenset({"defined", "undefined"})
_GUARD_FILTERS = frozenset({"default", "d"})


def guarded(ast: nodes.Node) -> list[nodes.Node]:
    """The expressions read only behind a guard (`x is defined`, `x.y | default(...)`): a
    read that finds nothing there gives an undefined value to the guard instead of an
    error."""
    found: list[nodes.Node] = []
    # find_all yields descendants only, and an expression's guard can be its root node.
    for node in [ast, *ast.find_all((nodes.Test, nodes.Filter))]:
        if isinstance(node, nodes.Test) and node.name in _GUARD_TESTS:
            found.append(node.node)
        if isinstance(node, nodes.Filter) and node.name in _GUARD_FILTERS and node.node:
            found.append(node.node)
    return found


def assigned_or_guarded(ast: nodes.Node) -> set[str]:
    """Names the template sets somewhere (`set`, `for`, macro and call-block parameters,
    `with`) or only reads behind a guard (`x is defined`, `x | default(...)`). Whether such
    a name exists when it is read depends on the branch taken, so only a real render can tell;
    Jinja's own analysis reports a name set inside an `if` as undeclared."""
    names = {node.name for node in ast.find_all(nodes.Name) if node.ctx in ("store", "param")}
    names.update(node.name for node in guarded(ast) if isinstance(node, nodes.Name))
    return names


@lru_cache(maxsize=1024)
def _undeclared_names(source: str) -> dict[str, int | None]:
    ast = environment.parse(source)
    names = meta.find_undeclared_variables(ast) - assigned_or_guarded(ast)
    lines: dict[str, int | None] = dict.fromkeys(sorted(names))
    for node in ast.find_all(nodes.Name):
        if node.name in lines and lines[node.name] is None:
            lines[node.name] = node.lineno
    return lines


# Names whose values exist only at run time (empty placeholders at check time).
RUN_TIME_NAMES = frozenset({"outputs", "previous_outputs", "previous_files"})


@lru_cache(maxsize=1024)
def reads_outputs(source: str) -> bool:
    """Whether a template reads earlier sheets' output, whose values exist only at run
    time."""
    return bool(names_read(source) & RUN_TIME_NAMES)


# Names whose values at check time are placeholders (the real ones exist once submitted).
PLACEHOLDER_NAMES = RUN_TIME_NAMES | {"workspace", "job_id"}


def reads_placeholders(source: str) -> bool:
    """Whether a check-time render of the template sees any placeholder value; if not, it
    renders then exactly as it will at run time."""
    return bool(names_read(source) & PLACEHOLDER_NAMES)


@lru_cache(maxsize=1024)
def names_read(source: str) -> frozenset[str]:
    ast = environment.parse(source)
    return frozenset(node.name for node in ast.find_all(nodes.Name))


def undefined_names(source: str, known: frozenset[str] | set[str]) -> list[tuple[str, int | None]]:
    """Names a template reads unconditionally that neither the context nor Jinja provides,
    with the line of first use; this also finds typos in branches not taken. Names that are
    set in the template or read behind a guard are left to the render with the real context,
    which reports them only when they really are undefined."""
    compile_template(source)  # syntax errors first, with their own message
    names = _undeclared_names(source)
    return [
        (name, line)
        for name, line in names.items()
        if name not in known and name not in environment.globals
    ]


def name_errors(
    path: str, template: str, known: frozenset[str] | set[str], defined: str | None = None
) -> list[FieldError]:
    """The template's syntax error, or one error per name it reads that is not `known`; with
    `defined` (the known names, listed), each says its line and what is defined."""
    try:
        missing = undefined_names(template, known)
    except TemplateRenderError as exc:
        return [FieldError(path, str(exc))]
    if defined is None:
        return [FieldError(path, f"undefined template variable {name!r}") for name, _ in missing]
    return [
        FieldError(
            path,
            f"undefined template variable {name!r}"
            + (f" at line {line}" if line else "")
            + f"; defined: {defined}",
        )
        for name, line in missing
    ]


def _template_line(tb: TracebackType | None) -> int | None:
    # Jinja rewrites tracebacks so that template frames carry template line numbers.
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_NAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _at_line(message: str, line: int | None) -> str:
    return message if line is None else f"{message} (line {line})"


def context_variables(ctx: TemplateContext) -> dict[str, Any]:
    values = dict(ctx.variables)
    values.update(
        workspace=ctx.workspace,
        job_id=ctx.job_id,
        sheet_num=ctx.sheet_num,
        total_sheets=ctx.total_sheets,
        sheet_name=ctx.sheet_name,
        start_item=ctx.start_item,
        end_item=ctx.end_item,
        outputs=_Outputs(ctx.outputs, ctx.sheet_num, ctx.sheet_names, ctx.total_sheets),
        stage=ctx.stage or ctx.sheet_num,
        instance=ctx.instance,
        fan_count=ctx.fan_count,
        previous_outputs=ctx.previous_outputs,
        previous_files=ctx.previous_files,
    )
    return values


def render(template: str, ctx: TemplateContext, seconds: float = RENDER_SECONDS) -> str:
    if "{" not in template:
        return template  # no expression, statement or comment: the text is the result
    compiled = compile_template(template)
    try:
        with render_budget(min(RENDER_SECONDS, seconds)):
            return compiled.render(context_variables(ctx))
    except Exception as exc:  # any error inside user template code is the template's fault
        raise render_error(exc) from None


def render_error(exc: Exception, *, lines: bool = True) -> TemplateRenderError:
    """The error to report for an exception raised by user template code (`lines`: say at
    which template line; an expression has one)."""
    line = _template_line(exc.__traceback__) if lines else None
    if isinstance(exc, _NotAncestorError):
        return TemplateRenderError(_at_line(str(exc), line), kind="outputs", line=line)
    if isinstance(exc, UndefinedError):
        message = _at_line(f"undefined: {exc.message}", line)
        return TemplateRenderError(message, kind="undefined", line=line)
    if isinstance(exc, SecurityError):
        message = _at_line(f"not allowed in templates: {exc}", line)
        return TemplateRenderError(message, kind="security", line=line)
    message = _at_line(f"template error: {type(exc).__name__}: {exc}", line)
    return TemplateRenderError(message, kind="error", line=line)


def render_sheet_prompt(sheet: SheetLike, ctx: TemplateContext) -> str:
    try:
        return render(sheet.prompt, ctx)
    except TemplateRenderError as exc:
        raise TemplateRenderError(
            f"sheet {sheet.sheet_num} prompt: {exc}", kind=exc.kind, line=exc.line
        ) from None


def render_validation(validation: Validation, ctx: TemplateContext) -> Validation:
    """A copy of `validation` with its templated fields rendered for one sheet."""
    update: dict[str, str] = {}
    for field in TEMPLATED_VALIDATION_FIELDS[validation.type]:
        try:
            update[field] = render(getattr(validation, field), ctx)
        except TemplateRenderError as exc:
            raise TemplateRenderError(
                f"validation {validation.type} {field}: {exc}", kind=exc.kind, line=exc.line
            ) from None
    return validation.model_copy(update=update)


# --- checks at load time ----------------------------------------------------------------


class _PlaceholderOutputs(Mapping[int, str]):
    """`outputs` at check time: empty text for each ancestor. With a broken DAG (`bits` None)
    every sheet is allowed rather than guessed at; the DAG error is reported instead. Lazy:
    a batch spec checks every one of up to 10,000 sheets, so building a dict of ancestors per
    sheet would make the check quadratic."""

    def __init__(self, bits: int | None, count: int) -> None:
        self._bits = bits
        self._count = count

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, int) or isinstance(key, bool) or not 1 <= key <= self._count:
            return False
        return self._bits is None or bool(self._bits >> key & 1)

    def __getitem__(self, key: int) -> str:
        if key in self:
            return ""
        raise KeyError(key)

    def __iter__(self) -> Iterator[int]:
        return (n for n in range(1, self._count + 1) if n in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _template_sites(spec: JobSpec, sheet: SheetLike) -> Iterator[tuple[str, str, bool]]:
    """(field path, template, whether it renders to a regex) of everything rendered for one
    sheet."""
    index = sheet.stage - 1
    yield (f"sheets.{index}.prompt" if spec.sheets else "prompt.template"), sheet.prompt, False
    own = spec.sheets[index].validations if spec.sheets else []
    groups = ((f"sheets.{index}.validations", own), ("validations", spec.validations))
    for prefix, validations in groups:
        for j, validation in enumerate(validations):
            for field in TEMPLATED_VALIDATION_FIELDS[validation.type]:
                is_regex = validation.type == "content_regex" and field == "pattern"
                yield f"{prefix}.{j}.{field}", getattr(validation, field), is_regex


Renderer = Callable[[str, TemplateContext, float], object]


@dataclass(frozen=True)
class RenderedSite:
    """A template (or expression) of a sheet that is not its prompt or a validation, whose
    names are checked elsewhere (conditions, prompt inputs). Rendering it with the sheet's
    own values at submit finds what only those values show: an `outputs` entry that is not
    an ancestor, a computation past a limit."""

    path: str
    source: str
    render: Renderer


_SITE_KINDS = frozenset({"outputs", "security"})
_Sheet = TypeVar("_Sheet", bound=SheetLike)


def check_templates(
    spec: JobSpec,
    sheets: Sequence[_Sheet],
    bits: list[int] | None,
    more_sites: Callable[[_Sheet], Iterable[RenderedSite]] | None = None,
) -> list[FieldError]:
    known = BUILTIN_TEMPLATE_VARIABLES | set(spec.variables)
    known_list = ", ".join(sorted(known))
    names = {s.name: s.sheet_num for s in sheets if s.name is not None}
    errors: list[FieldError] = []
    failed: set[str] = set()  # a shared template (batch prompt, job validation) fails once
    checked: set[str] = set()
    deadline = time.monotonic() + CHECK_SECONDS
    for sheet in sheets:
        ctx = TemplateContext(
            workspace=PLACEHOLDER_WORKSPACE,
            job_id=PLACEHOLDER_JOB_ID,
            sheet_num=sheet.sheet_num,
            total_sheets=len(sheets),
            sheet_name=sheet.name,
            start_item=sheet.start_item,
            end_item=sheet.end_item,
            variables=spec.variables,
            outputs=_PlaceholderOutputs(
                None if bits is None else bits[sheet.sheet_num], len(sheets)
            ),
            sheet_names=names,
            stage=sheet.stage,
            instance=sheet.instance,
            fan_count=sheet.fan_count,
        )
        for path, template, is_regex in _template_sites(spec, sheet):
            if path in failed:
                continue
            try:
                if path not in checked:
                    checked.add(path)
                    missing = undefined_names(template, known)
                    for name, line in missing:
                        at = f" at line {line}" if line else ""
                        errors.append(
                            FieldError(
                                path,
                                f"undefined template variable {name!r}{at}; defined: {known_list}",
                            )
                        )
                    if missing:
                        failed.add(path)
                        continue
                left = deadline - time.monotonic()
                if left <= 0:
                    errors.append(
                        FieldError(
                            path,
                            f"checking the templates ran past the {CHECK_SECONDS:g} s budget "
                            f"for a whole spec (at sheet {sheet.sheet_num} of {len(sheets)})",
                        )
                    )
                    return errors
                rendered = render(template, ctx, seconds=left)
                # Rendered here as at run time (no placeholder read), a pattern that is no
                # regex would fail every attempt's check the same way.
                problem = None
                if is_regex and is_templated(template) and not reads_placeholders(template):
                    problem = regex_problem(rendered)
                if problem is not None:
                    errors.append(
                        FieldError(
                            path,
                            f"renders to {quoted(rendered)} for sheet {sheet.sheet_num}, "
                            f"not a valid regular expression: {problem}",
                        )
                    )
                    failed.add(path)
            except TemplateRenderError as exc:
                # Other runtime errors may come from the placeholder values (e.g. empty
                # outputs), so they are left for the real render, unless the template reads
                # none of them: then this render was the real one, and every attempt would
                # fail the same way. So is a name that is undefined only because a branch
                # read placeholder outputs.
                placeholder = exc.kind == "undefined" and reads_outputs(template)
                if exc.kind == "error" and reads_placeholders(template):
                    continue
                if not placeholder:
                    errors.append(FieldError(path, str(exc)))
                    failed.add(path)
        for site in more_sites(sheet) if more_sites is not None else ():
            if site.path in failed:
                continue
            left = deadline - time.monotonic()
            try:
                site.render(site.source, ctx, max(left, 0.01))
            except TemplateRenderError as exc:
                if exc.kind in _SITE_KINDS:
                    errors.append(FieldError(site.path, str(exc)))
                    failed.add(site.path)
    return errors
