"""Which sheet a condition's `sheets[...]` reads, and, at submit, the reads of sheets the job
does not have.

A `skip_when` reads the job's sheets by number, digit string or name (`sheets[2]`,
`sheets['2']`, `sheets.plan`, `sheets['phase-2']`). The sheets of a job are known once it is
expanded, so a read by a constant key that names none of them can only fail when the
condition is decided: it is a submit error at the condition's path instead of a failed
sheet later. What is left to run time:

- a key built when the condition is evaluated (`sheets['phase-' ~ stage]`,
  `sheets[sheet_num - 1]`): its value exists only then;
- a sheet whose presence the condition tests (`sheets.x is defined`,
  `sheets.x | default(...)`, `'x' in sheets`, `sheets.get('x')`): that is how a condition
  reads a sheet that may be missing, and its other reads of it may be behind the test
  (`'x' in sheets and sheets.x.status == 'failed'`), which only evaluating it can tell.

A condition may read any sheet of the job, not only its ancestors (`outputs`, by contrast,
must be an ancestor's): a sheet's status is always known, and reading one that runs beside
it ("skip me if the fast path already completed") is a race the spec asks for. The engine
resolves keys with `sheet_number` too, so what the check accepts is what run time finds.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from podium.core.errors import MAX_REPORTED_ERRORS, FieldError, quoted
from podium.core.spec.expressions import ConstantRead, constant_reads
from podium.core.spec.models import MAX_SHEETS, JobSpec
from podium.core.spec.templating import SheetLike, TemplateRenderError

# The name `skip_when` expressions read the job's sheets by.
SHEETS_NAME = "sheets"
# `sheets.get`, `sheets.items`...: the mapping's own methods, which a read by attribute finds
# before any sheet (and so does `sheets['get']`).
MAPPING_METHODS = frozenset(name for name in dir(Mapping) if not name.startswith("_"))
MAX_LISTED_NAMES = 10
# Suggesting a close name compares with every name (about 5 ms for 500 names): past this many
# names, or once a spec has more errors than an answer shows, none is suggested.
MAX_NAMES_COMPARED = 500


def sheet_number(key: object, names: Mapping[str, int]) -> int | None:
    """The sheet number `sheets[key]` stands for (not yet checked to exist); None for a key
    that is no sheet's number or name (a boolean, a float, an unknown name)."""
    if isinstance(key, bool):
        return None
    if isinstance(key, str):
        return int(key) if key.isdecimal() else names.get(key)
    return key if isinstance(key, int) else None


@dataclass(frozen=True)
class JobSheets:
    """The sheets a condition can read: numbered 1..count (after fan-out), by name."""

    count: int
    names: dict[str, int]
    # A fanned-out sheet's declared name -> its instance count (its instances are NAME-1..).
    fanned: dict[str, int]

    @classmethod
    def of(cls, spec: JobSpec, sheets: Sequence[SheetLike]) -> JobSheets:
        fanned: dict[str, int] = {}
        for sheet in sheets:
            if sheet.fan_count > 1 and sheet.instance == 1:
                # The batch form names its sheets sheet-N; an explicit one may have no name.
                declared = (
                    spec.sheets[sheet.stage - 1].name if spec.sheets else f"sheet-{sheet.stage}"
                )
                if declared is not None:
                    fanned[declared] = sheet.fan_count
        names = {s.name: s.sheet_num for s in sheets if s.name is not None}
        return cls(len(sheets), names, fanned)

    @classmethod
    def from_raw(cls, sheets: list[Any]) -> JobSheets | None:
        """The same from the raw `sheets` of a spec whose models do not validate, when its
        fan-out can be read (every `fan_out` absent or a whole number in range); else None."""
        count, names, fanned = 0, {}, {}
        for sheet in sheets:
            if not isinstance(sheet, Mapping):
                return None
            fan_out, name = sheet.get("fan_out"), sheet.get("name")
            if fan_out is None:
                fan_out = 1
            if isinstance(fan_out, bool) or not isinstance(fan_out, int):
                return None
            if not 1 <= fan_out <= MAX_SHEETS:
                return None
            if isinstance(name, str) and fan_out > 1:
                fanned[name] = fan_out
            for instance in range(1, fan_out + 1):
                count += 1
                if isinstance(name, str):
                    names[name if fan_out == 1 else f"{name}-{instance}"] = count
            if count > MAX_SHEETS:
                return None
        return cls(count, names, fanned)

    def has(self, key: object) -> bool:
        number = sheet_number(key, self.names)
        return number is not None and 1 <= number <= self.count

    def numbering(self) -> str:
        after = " after fan-out" if self.fanned else ""
        return f"the sheets are numbered 1 to {self.count}{after}"

    def naming(self) -> str:
        if not self.names:
            return "no sheet has a name"
        listed = list(self.names)  # in sheet order
        shown = ", ".join(listed[:MAX_LISTED_NAMES])
        more = len(listed) - MAX_LISTED_NAMES
        return f"named {shown}" + (f" and {more} more" if more > 0 else "")


def _written(read: ConstantRead) -> str:
    """The read as the expression has it (Jinja's words for constants)."""
    key = read.key
    if read.by_attribute:
        return f"{SHEETS_NAME}.{key}"
    if isinstance(key, bool):
        shown = "true" if key else "false"
    else:
        shown = "none" if key is None else quoted(key)
    return f"{SHEETS_NAME}[{shown}]"


def _problem(read: ConstantRead, job: JobSheets, suggest: bool) -> str:
    written, key = _written(read), read.key
    if isinstance(key, str) and key in job.fanned:
        count = job.fanned[key]
        return (
            f"{written}: sheet {quoted(key)} has fan_out {count}, so it runs as {key}-1 to "
            f"{key}-{count}; read one of them (sheets['{key}-1'])"
        )
    if isinstance(key, str) and not key.isdecimal():
        close = (
            difflib.get_close_matches(key, list(job.names), n=1)
            if suggest and len(job.names) <= MAX_NAMES_COMPARED
            else []
        )
        hint = f" (did you mean {quoted(close[0])}?)" if close else ""
        return (
            f"{written}: no sheet of this job is named {quoted(key)}{hint}; "
            f"{job.numbering()}, {job.naming()}"
        )
    if sheet_number(key, job.names) is None:
        return f"{written}: a sheet is read by its number or its name; {job.numbering()}"
    return f"{written}: there is no sheet {sheet_number(key, job.names)}; {job.numbering()}"


def missing_sheet_errors(
    path: str, expression: str, job: JobSheets, errors_so_far: int = 0
) -> list[FieldError]:
    """One error per distinct read of a sheet the job does not have (see the module
    docstring for what is left to run time). A syntax error is reported elsewhere."""
    suggest = errors_so_far < MAX_REPORTED_ERRORS
    try:
        reads = constant_reads(expression, SHEETS_NAME)
    except TemplateRenderError:
        return []
    problems: dict[str, None] = {}
    for read in reads:
        key = read.key
        if read.guarded or job.has(key):
            continue
        if isinstance(key, str) and (key in MAPPING_METHODS or key.startswith("_")):
            continue  # a method, or what the sandbox refuses (reported when rendered)
        problems[_problem(read, job, suggest)] = None
    return [FieldError(path, problem) for problem in problems]
