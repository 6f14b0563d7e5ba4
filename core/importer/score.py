"""`podium import-score`: a Marianne score as the closest Podium job spec, with every field
that could not be carried over reported with the reason.

The result always validates: after the mapping, the spec is loaded as `podium validate`
would load it, and a carried-over value Podium refuses (a condition written in Python that
Jinja cannot read, say) is taken out again and reported, instead of producing a spec that
fails to submit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from podium.core.errors import PodiumError, SpecError
from podium.core.importer.events import chain_and_hooks, notifications
from podium.core.importer.formats import job_name
from podium.core.importer.instruments import Instruments, backend_settings
from podium.core.importer.reasons import reason_for
from podium.core.importer.stages import Plan, StageBuilder, extension_parts, injections
from podium.core.importer.template import prompt_template
from podium.core.importer.tracker import Tracker
from podium.core.spec.bounds import check_value
from podium.core.spec.loader import load_spec
from podium.core.spec.models import BUILTIN_TEMPLATE_VARIABLES, JobSpec
from podium.core.spec.prompt_check import input_path_problem
from podium.core.spec.prompting import MAX_CONTEXT_BYTES
from podium.core.spec.source import parse_yaml, read_spec_file

# Marianne's retry defaults, which differ from Podium's.
_RETRY_DEFAULTS = {"max_retries": 3, "base_delay_seconds": 10.0, "max_delay_seconds": 3600.0}
_MAX_REPAIRS = 50


class ScoreError(PodiumError):
    """The input is not a Marianne score the importer can read."""


@dataclass
class ImportResult:
    spec: dict[str, Any]
    dropped: list[tuple[str, str]]  # (score field path, why it was not carried over)
    notes: list[tuple[str, str]]  # (score field path, how it was carried over differently)

    def report(self) -> list[str]:
        lines = [f"dropped: {path}: {why}" for path, why in self.dropped]
        lines += [f"note: {path}: {text}" for path, text in self.notes]
        return lines


def import_score(
    raw: Any, *, score_dir: Path | None = None, self_names: tuple[str, ...] = ()
) -> ImportResult:
    """`score_dir`: where the score's relative files are (its template_file).
    `self_names`: the imported spec's file name, then the names under which a chained
    `run_job` means this same score (the follow-up then submits the imported spec)."""
    if not isinstance(raw, Mapping):
        raise ScoreError("a score is a YAML mapping with at least name, sheet and prompt")
    for key in ("sheet", "prompt"):
        if not isinstance(raw.get(key), Mapping):
            raise ScoreError(f"{key}: a Marianne score needs a `{key}` mapping")
    t = Tracker(raw)
    try:
        spec = _map(t, score_dir, self_names)
    except ValueError as exc:
        raise ScoreError(str(exc)) from None
    _repair(spec, t)
    t.leftovers(reason_for)
    return ImportResult(spec, sorted(t.dropped.items()), t.notes)


def _map(t: Tracker, score_dir: Path | None, self_names: tuple[str, ...]) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    name = t.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name: a score needs a name")
    spec["name"] = job_name(name)
    if spec["name"] != name:
        t.note("name", f"{name!r} became {spec['name']!r} (Podium job names are [a-z0-9_-])")
    if isinstance(t.peek("description"), str):
        spec["description"] = t.get("description")
    if t.has("workspace"):
        spec["workspace"] = str(t.get("workspace"))
    instruments = Instruments(t)
    spec["instrument"] = instruments.default
    config = dict(instruments.default_config)
    backend_config, modes = backend_settings(t, instruments.default)
    config = {**backend_config, **config}
    if t.peek("stale_detection.enabled"):
        t.use("stale_detection.enabled")
        config["idle_timeout_seconds"] = t.get("stale_detection.idle_timeout_seconds") or 300.0
    elif t.has("stale_detection.enabled"):
        t.use("stale_detection")
    variables = _variables(t)
    plan = StageBuilder(t, instruments, set(variables)).build()
    template, undefined, defined = prompt_template(t, plan, set(variables), score_dir)
    variables.update(defined)
    variables.update(dict.fromkeys(undefined, ""))
    fallbacks = t.get("instrument_fallbacks")
    if fallbacks:
        spec["fallbacks"] = [
            instruments.resolve(str(n), "instrument_fallbacks")[0] for n in fallbacks
        ]
    if variables:
        spec["variables"] = variables
    _sheets(spec, plan, template, config, modes, instruments)
    _execution(t, spec)
    prelude = injections(t, "sheet.prelude", t.peek("sheet.prelude"))
    files, texts = extension_parts(
        "prompt.prompt_extensions", t.peek("prompt.prompt_extensions"), t
    )
    if texts:
        _prefix_prompts(spec, texts)
    if prelude or files:
        spec["prelude"] = files + prelude
    _context(t, spec)
    hooks = notifications(t)
    chain, commands = chain_and_hooks(t, self_names)
    if commands:
        hooks.setdefault("on_complete", []).extend(commands)
    if hooks:
        spec["notifications"] = hooks
    if chain is not None:
        spec["on_success"] = chain
    return spec


def _variables(t: Tracker) -> dict[str, Any]:
    out: dict[str, Any] = {}
    block = t.peek("prompt.variables")
    if block is not None and not isinstance(block, Mapping):
        t.drop("prompt.variables", "must be a mapping of variable names to values")
    if not isinstance(block, Mapping):
        return out
    for key in block:
        where = f"prompt.variables.{key}"
        if str(key) in BUILTIN_TEMPLATE_VARIABLES:
            t.drop(where, f"Podium provides {key!r} itself; a variable may not shadow it")
            continue
        out[str(key)] = t.get(where)
    return out


def _sheets(
    spec: dict[str, Any],
    plan: Plan,
    template: str,
    config: dict[str, Any],
    modes: list[str],
    instruments: Instruments,
) -> None:
    stages = plan.stages
    bypass = bool(modes)
    uniform = plan.uniform
    if config:
        spec["instrument_config"] = dict(config)
    if bypass and spec["instrument"] == "claude-code":
        spec.setdefault("instrument_config", {})["permission_mode"] = "bypass"
    if uniform:
        sheet: dict[str, Any] = {"size": plan.size, "total_items": plan.total_items}
        deps = {s.num: s.depends_on for s in stages if s.depends_on}
        fans = {s.num: s.count for s in stages if s.count > 1}
        skips = {s.num: s.skip_when for s in stages if s.skip_when}
        probes = {s.num: s.skip_when_command for s in stages if s.skip_when_command}
        for key, value in (
            ("dependencies", deps), ("fan_out", fans), ("skip_when", skips),
            ("skip_when_command", probes),
        ):  # fmt: skip
            if value:
                sheet[key] = value
        spec["sheet"] = sheet
        spec["prompt"] = {"template": template}
    else:
        spec["sheets"] = [_entry(s, template) for s in stages]
    if plan.job_validations:
        spec["validations"] = plan.job_validations
    del instruments


def _entry(stage: Any, template: str) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if stage.name:
        entry["name"] = stage.name
    entry["prompt"] = "\n\n".join([*stage.texts, template]) if stage.texts else template
    if stage.depends_on:
        entry["depends_on"] = stage.depends_on
    if stage.count > 1:
        entry["fan_out"] = stage.count
    if stage.instrument:
        entry["instrument"] = stage.instrument
    if stage.config:
        entry["instrument_config"] = dict(stage.config)
    if stage.fallbacks is not None:
        entry["fallbacks"] = stage.fallbacks
    if stage.cadenzas:
        entry["cadenzas"] = stage.cadenzas
    if stage.validations:
        entry["validations"] = stage.validations
    if stage.skip_when:
        entry["skip_when"] = stage.skip_when
    if stage.skip_when_command:
        entry["skip_when_command"] = stage.skip_when_command
    return entry


def _prefix_prompts(spec: dict[str, Any], texts: list[str]) -> None:
    """Inline prompt extensions go before every sheet's task."""
    lead = "\n\n".join(texts)
    if "prompt" in spec:
        spec["prompt"]["template"] = f"{lead}\n\n{spec['prompt']['template']}"
    for entry in spec.get("sheets", []):
        entry["prompt"] = f"{lead}\n\n{entry['prompt']}"


def _execution(t: Tracker, spec: dict[str, Any]) -> None:
    retry = dict(_RETRY_DEFAULTS)
    for key in ("max_retries", "base_delay_seconds", "max_delay_seconds", "jitter"):
        if t.has(f"retry.{key}"):
            retry[key] = t.get(f"retry.{key}")
    base = t.peek("retry.exponential_base")
    if base in (None, 2, 2.0):
        t.use("retry.exponential_base")
    spec["retry"] = retry
    if t.get("parallel.enabled"):
        spec["concurrency"] = {"max_parallel_sheets": t.get("parallel.max_concurrent") or 3}
    else:
        # Marianne runs one sheet at a time unless parallel execution is enabled.
        spec["concurrency"] = {"max_parallel_sheets": 1}
    if t.peek("parallel.fail_fast") is False:
        t.use("parallel.fail_fast")
        spec["on_failure"] = "continue"
    else:
        t.use("parallel.fail_fast")
    limit = t.peek("cost_limits.max_cost_per_job")
    if limit is not None and t.peek("cost_limits.enabled") is not False:
        spec["cost_limit_usd"] = t.get("cost_limits.max_cost_per_job")
        t.use("cost_limits.enabled")
    elif t.peek("cost_limits.enabled") is False:
        t.use("cost_limits")


def _context(t: Tracker, spec: dict[str, Any]) -> None:
    if t.peek("cross_sheet") is None:
        return
    capture = t.get("cross_sheet.auto_capture_stdout")
    files = _capture_files(t)
    if not capture and not files:
        t.use("cross_sheet")
        return
    context: dict[str, Any] = {}
    lookback = t.get("cross_sheet.lookback_sheets")
    context["previous_sheets"] = 3 if lookback is None else lookback
    chars = t.get("cross_sheet.max_output_chars")
    if chars is not None:
        context["output_bytes"] = min(int(chars), MAX_CONTEXT_BYTES)
        if int(chars) > MAX_CONTEXT_BYTES:
            t.note("cross_sheet.max_output_chars", f"capped at {MAX_CONTEXT_BYTES}")
    else:
        context["output_bytes"] = 2000  # Marianne's default
    if files:
        context["files"] = files
    spec["context"] = context


def _capture_files(t: Tracker) -> list[str]:
    files: list[str] = []
    block = t.peek("cross_sheet.capture_files")
    for index, entry in enumerate(block if isinstance(block, list) else []):
        where = f"cross_sheet.capture_files.{index}"
        problem = input_path_problem(str(entry))
        if problem is not None:
            t.drop(where, f"Podium refuses the path: {problem}")
            continue
        t.use(where)
        files.append(str(entry))
    if block is not None and not isinstance(block, list):
        t.drop("cross_sheet.capture_files", "must be a list of file paths")
    return files


# ----- keeping the result valid ---------------------------------------------------------------

_REMOVABLE = ("skip_when", "skip_when_command", "cadenzas", "prelude", "fallbacks", "context")


def _repair(spec: dict[str, Any], t: Tracker) -> None:
    """Take out carried-over values that Podium refuses, until the spec loads."""
    for _ in range(_MAX_REPAIRS):
        try:
            load_spec(data=spec)
            return
        except SpecError as exc:
            errors = exc.errors
        if not any(_remove(spec, error.path, error.message, t) for error in errors):
            # As every error prints them: the root as `<root>`, never an empty path.
            problems = "; ".join(str(e) for e in errors[:5])
            raise ScoreError(f"the score does not translate into a valid spec: {problems}")
    raise ScoreError("the score does not translate into a valid spec")


def _remove(spec: dict[str, Any], path: str, message: str, t: Tracker) -> bool:
    parts = path.split(".")
    node: Any = spec
    trail: list[tuple[Any, str | int]] = []
    for part in parts:
        key: str | int = int(part) if part.isdigit() and isinstance(node, list) else part
        if isinstance(node, Mapping) and key not in node and part.isdigit():
            key = int(part)
        trail.append((node, key))
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return False
    for depth in range(len(trail) - 1, -1, -1):
        parent, key = trail[depth]
        if str(key) in _REMOVABLE or (depth > 0 and str(trail[depth - 1][1]) in _REMOVABLE):
            origin = ".".join(str(k) for _, k in trail[: depth + 1])
            del parent[key]
            t.note(origin, f"left out: Podium refuses it ({message})")
            return True
    return False


class _AliasingDumper(yaml.SafeDumper):
    """Writes a long text that several sheets share (their prompt) once, as an anchor."""

    def ignore_aliases(self, data: Any) -> bool:
        if isinstance(data, str) and len(data) > 200:
            return False
        return super().ignore_aliases(data)


def _block_text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # Prompts read best as YAML block text; trailing spaces would force quoting anyway.
    if "\n" in data and not any(line != line.rstrip() for line in data.split("\n")):
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_AliasingDumper.add_representer(str, _block_text)


def to_yaml(spec: Mapping[str, Any]) -> str:
    """The spec as YAML, its fields in the order the spec format documents them."""
    order = list(JobSpec.model_fields)
    spec = {k: spec[k] for k in sorted(spec, key=lambda k: order.index(k) if k in order else 99)}
    shared: dict[str, str] = {}

    def intern(node: Any) -> Any:
        if isinstance(node, str) and len(node) > 200:
            return shared.setdefault(node, node)
        if isinstance(node, dict):
            return {k: intern(v) for k, v in node.items()}
        if isinstance(node, list):
            return [intern(v) for v in node]
        return node

    return yaml.dump(
        intern(dict(spec)),
        Dumper=_AliasingDumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
        default_flow_style=False,
    )


def read_score(path: Path) -> Any:
    """The score's YAML, read as a spec is: within MAX_SPEC_BYTES, nested at most
    MAX_SPEC_DEPTH, with bounded aliases (a plain `safe_load` of a score nested 5,000 deep
    ended in a RecursionError, and an alias bomb expanded in full)."""
    try:
        text = read_spec_file(path)
    except SpecError as exc:
        raise ScoreError(f"SCORE: {_messages(exc)}") from None
    try:
        raw = parse_yaml(text, path)
        check_value(raw)
    except SpecError as exc:
        raise ScoreError(f"SCORE: {path}: {_messages(exc)}") from None
    return raw


def _messages(exc: SpecError) -> str:
    return "; ".join(e.message for e in exc.errors)
