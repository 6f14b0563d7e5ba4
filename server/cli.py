"""The `podium` command line: the same core as the MCP tools, for people."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig, load_config
from podium.core.errors import PodiumError, SpecError
from podium.core.models import JobStatus, SheetState
from podium.server.logging_setup import configure_logging


def _config(args: argparse.Namespace) -> PodiumConfig:
    overrides: dict[str, Any] = {}
    if getattr(args, "allow_root", None):
        overrides["allowed_roots"] = [Path(p) for p in args.allow_root]
    for key in ("max_concurrent_sheets", "max_concurrent_jobs", "kill_grace_seconds"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    return load_config(home=Path(args.home) if args.home else None, overrides=overrides)


def _sheet_line(sheet: SheetState) -> str:
    label = f"sheet {sheet.sheet_num}" + (f" ({sheet.name})" if sheet.name else "")
    duration = f" in {sheet.duration_seconds:.1f}s" if sheet.duration_seconds is not None else ""
    error = (
        f": {sheet.last_error}" if sheet.last_error and sheet.status.value != "completed" else ""
    )
    attempts = f", {sheet.attempts} attempt(s)" if sheet.attempts else ""
    return f"  {label}: {sheet.status.value}{duration}{attempts}{error}"


async def _run(args: argparse.Namespace) -> int:
    spec_path = Path(args.spec).expanduser().resolve()
    config = _config(args)
    configure_logging(config.logs_dir, level="WARNING")
    conductor = Conductor(config)
    await conductor.start()
    try:
        async with conductor.events.subscribe() as events:
            submitted = await conductor.submit_job(
                path=spec_path, job_id=args.job_id, extra_roots=[spec_path.parent]
            )
            job_id = submitted.job_id
            print(
                f"job {job_id} ({submitted.total_sheets} sheets), workspace {submitted.workspace}"
            )
            reported: dict[int, tuple[str, int]] = {}
            while True:
                detail = await conductor.get_job(job_id, sheet_limit=10_000)
                for sheet in detail.sheets:
                    key = (sheet.status.value, sheet.attempts)
                    settled = sheet.status.is_terminal or sheet.status.value == "waiting"
                    if settled and reported.get(sheet.sheet_num) != key:
                        reported[sheet.sheet_num] = key
                        print(_sheet_line(sheet), flush=True)
                        if args.follow and sheet.output_tail:
                            print("    | " + sheet.output_tail.rstrip().replace("\n", "\n    | "))
                if detail.status.is_terminal:
                    verdict = detail.status.value
                    extra = f": {detail.error}" if detail.error else ""
                    print(f"job {job_id} {verdict}{extra}")
                    return 0 if detail.status is JobStatus.COMPLETED else 1
                with anyio.move_on_after(2):
                    async for event in events:
                        if event.job_id == job_id:
                            break
    finally:
        await conductor.stop()


async def _instruments(args: argparse.Namespace) -> int:
    from podium.core.instruments.catalog import InstrumentCatalog

    config = _config(args)
    catalog = await anyio.to_thread.run_sync(InstrumentCatalog.load, config.instruments_dir)
    for info in catalog.all():
        state = "available" if info.available else "not installed"
        version = f" ({info.version})" if info.version else ""
        print(f"{info.name:12} {state}{version}  [{info.source}]")
    for error in catalog.load_errors:
        print(f"error: {error}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="podium", description="Durable job orchestration for AI agents (MCP server + CLI)"
    )
    parser.add_argument("--home", help="Podium home (default $PODIUM_HOME or ~/.podium)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a job spec in this process; exit 0 if it completes")
    run.add_argument("spec", help="path to a job spec (YAML or JSON)")
    run.add_argument("--job-id", help="job id (default <name>-<timestamp>-<hex>)")
    run.add_argument("--follow", action="store_true", help="also print each sheet's output")
    run.add_argument("--allow-root", action="append", help="extra allowed workspace root")
    run.add_argument("--max-concurrent-sheets", type=int)
    run.set_defaults(handler=_run)

    instruments = sub.add_parser("instruments", help="list instruments and their availability")
    instruments.set_defaults(handler=_instruments)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = anyio.run(args.handler, args)
        return code
    except SpecError as exc:
        print(f"podium: invalid job spec ({len(exc.errors)} problem(s)):", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return 2
    except PodiumError as exc:
        print(f"podium: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
