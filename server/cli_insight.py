"""`podium validate`, `estimate` and `diagnose`: what a spec will do, and why a job did what
it did. Spec files are sent as text, so they need not lie in an allowed root."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from podium.core.config import PodiumConfig
from podium.core.errors import FieldError, PodiumError
from podium.server.cli_base import (
    EXIT_FAILED,
    Context,
    emit_json,
    err,
    json_option,
    pass_ctx,
    run_async,
    say,
)

if TYPE_CHECKING:
    from podium.server.remote import Caller


def _spec_text(spec: str) -> str:
    path = Path(spec).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PodiumError(f"SPEC: cannot read {path}: {exc}") from exc


@asynccontextmanager
async def spec_reader(config: PodiumConfig) -> AsyncIterator[Caller]:
    """Where a spec is checked. A home that does not exist yet (before the first `podium
    run`) has no history and no instruments of its own, so its spec checks are those of an
    empty home: one made for the call and removed after it, with the real home's workspace
    folder still an allowed root. The real home is not created (a typo in --home must not
    leave one behind)."""
    from podium.server.remote import reader

    on_own_home = config.store_url == PodiumConfig(home=config.home).store_url
    if config.home.exists() or not on_own_home:
        async with reader(config) as (caller, _):
            yield caller
        return
    with tempfile.TemporaryDirectory(prefix="podium-check-") as scratch:
        values = config.model_dump(exclude={"store_url", "conductor_id"})
        values["home"] = Path(scratch)
        values["allowed_roots"] = [*config.allowed_roots, config.workspaces_dir]
        async with reader(PodiumConfig.model_validate(values)) as (caller, _):
            yield caller


@click.command()
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@json_option
@pass_ctx
@run_async
async def validate(ctx: Context, spec: str, as_json: bool) -> int:
    """Check SPEC without running it: exit 0 and the sheets it expands to, or every error
    (exit 1)."""
    async with spec_reader(ctx.config()) as caller:
        report = await caller.call("validate_spec", {"spec_yaml": _spec_text(spec)})
    if as_json:
        emit_json(report)
        return 0 if report["valid"] else EXIT_FAILED
    if not report["valid"]:
        errors = [FieldError(e["path"], e["message"]) for e in report["errors"]]
        err.print(f"podium: invalid job spec ({len(errors)} problem(s)):", markup=False)
        for error in errors:
            err.print(f"  {error}", markup=False)
        return EXIT_FAILED
    say(f"{spec}: valid, {len(report['sheets'])} sheet(s)")
    for sheet in report["sheets"]:
        deps = ", ".join(str(d) for d in sheet["depends_on"]) or "-"
        name = f" ({sheet['name']})" if sheet["name"] else ""
        say(f"  sheet {sheet['sheet_num']}{name}: {sheet['instrument']}, after {deps}")
    return 0


@click.command()
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@json_option
@pass_ctx
@run_async
async def estimate(ctx: Context, spec: str, as_json: bool) -> int:
    """How long SPEC will take (and cost), from earlier runs of the same job or instruments."""
    async with spec_reader(ctx.config()) as caller:
        guess = await caller.call("estimate", {"spec_yaml": _spec_text(spec)})
    if as_json:
        emit_json(guess)
        return 0
    say(_estimate_text(guess))
    return 0


def _seconds(value: float | None) -> str:
    from podium.core.estimate import span_text

    return "unknown" if value is None else span_text(value)


def _path_text(guess: dict[str, Any]) -> str:
    path = " -> ".join(str(n) for n in guess["critical_path"]) or "-"
    total = guess.get("critical_path_total", len(guess["critical_path"]))
    if total > len(guess["critical_path"]):
        path += f" -> ... ({total} sheets)"
    return path


def _cost_text(guess: dict[str, Any]) -> str:
    if guess["expected_cost_usd"] is None:
        return "-"
    text = f"${guess['expected_cost_usd']:.4f}"
    covered = guess.get("cost_sheets")
    if covered is not None and covered < guess["total_sheets"]:
        text += f" (of {covered} sheet(s) that reported a cost)"
    return text


def _estimate_text(guess: dict[str, Any]) -> str:
    lines = [
        f"{guess['name']}: {guess['total_sheets']} sheet(s), up to {guess['parallelism']} at once",
        f"  expected duration: {_seconds(guess['expected_seconds'])} "
        f"(critical path {_seconds(guess['critical_path_seconds'])}: sheets "
        f"{_path_text(guess)}; "
        f"one after another {_seconds(guess['sequential_seconds'])})",
        *(
            [f"  earlier runs took: {_seconds(guess['observed_seconds'])} (median, waits included)"]
            if guess.get("observed_seconds") is not None
            else []
        ),
        f"  expected cost: {_cost_text(guess)}",
        f"  confidence: {guess['confidence']} ({guess['earlier_runs']} earlier run(s), "
        f"{guess['samples']} sheet sample(s))",
        f"  {guess['note']}",
    ]
    for sheet in guess["sheets"]:
        name = f" ({sheet['name']})" if sheet["name"] else ""
        lines.append(
            f"  sheet {sheet['sheet_num']}{name}: {_seconds(sheet['expected_seconds'])} "
            f"[{sheet['basis']}, {sheet['samples']} sample(s)]"
        )
    if guess["sheets_total"] > len(guess["sheets"]):
        lines.append(f"  ... and {guess['sheets_total'] - len(guess['sheets'])} more sheet(s)")
    return "\n".join(lines)


@click.command()
@click.argument("job")
@json_option
@pass_ctx
@run_async
async def diagnose(ctx: Context, job: str, as_json: bool) -> int:
    """Why JOB failed or is stuck: each failing sheet's cause, failed validations, the log
    lines around each error, waits, and what to do next."""
    from podium.server.remote import reader

    async with reader(ctx.config()) as (caller, _):
        result = await caller.call("diagnose", {"job_id": job})
    if as_json:
        emit_json(result)
        return 0
    say(diagnosis_text(result))
    return 0


def diagnosis_text(d: dict[str, Any]) -> str:
    lines = [f"{d['job_id']}: {d['verdict']}"]
    if d.get("error"):
        lines.append(f"  error: {d['error']}")
    for sheet in d["failing"]:
        name = f" ({sheet['name']})" if sheet["name"] else ""
        category = sheet["error_category"] or sheet["status"]
        lines.append(
            f"\nsheet {sheet['sheet_num']}{name} [{sheet['instrument']}]: {category}, "
            f"{sheet['attempts']} attempt(s) ({', '.join(sheet['outcomes']) or '-'})"
        )
        lines.append(f"  cause: {sheet['cause']}")
        for v in sheet["failed_validations"]:
            lines.append(f"  validation {v['type']}: {v['detail']}")
            if v.get("expected"):
                lines.append(f"    expected: {v['expected']}")
            if v.get("found"):
                lines.append(f"    found:    {v['found']!r}")
        excerpt = sheet.get("log_excerpt")
        if excerpt:
            lines.append(f"  log (attempt {excerpt['attempt']}):")
            lines += [f"    | {line}" for line in excerpt["lines"]]
    if d["failing_total"] > len(d["failing"]):
        lines.append(f"\n... and {d['failing_total'] - len(d['failing'])} more failing sheet(s)")
    if d["skipped_total"]:
        shown = ", ".join(str(s["sheet_num"]) for s in d["skipped"])
        lines.append(f"\nskipped: {d['skipped_total']} sheet(s) ({shown})")
    for wait in d["waiting"]:
        lines.append(
            f"waiting: sheet {wait['sheet_num']} on {wait['reason']} until {wait['until'] or '-'}"
        )
    for held in d["rate_limits"]:
        lines.append(f"rate limit: {held['instrument']} held until {held['until']}")
    if d.get("pressure_level") in ("high", "critical"):
        lines.append(f"pressure: {d['pressure_level']} ({d['pressure_reason']})")
    if d["next_steps"]:
        lines.append("\nnext steps:")
        for step in d["next_steps"]:
            how = f"  [{step['cli']}]" if step.get("cli") else ""
            lines.append(f"  - {step['action']}{how}")
    return "\n".join(lines)
