"""`python -m bench [--only GROUP,...] [--rounds N] [--quick] [--json PATH]`: run the
benchmarks, print a table, write the figures as JSON."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import anyio
import structlog

from bench import dispatch, memory, queue_scale, shared, startup, tools
from bench.common import Figure, table
from podium.core.runner.reaper import become_subreaper

GROUPS = {
    "dispatch": dispatch.run,
    "shared": shared.run,
    "queue": queue_scale.run,
    "tools": tools.run,
    "startup": startup.run,
    "memory": memory.run,
}


async def main(args: argparse.Namespace) -> int:
    wanted = [g for g in args.only.split(",") if g] if args.only else list(GROUPS)
    figures: list[Figure] = []
    for group in wanted:
        started = time.perf_counter()
        print(f"[bench] {group} ...", file=sys.stderr, flush=True)
        figures += await GROUPS[group](args.rounds, args.quick)
        print(f"[bench] {group} done in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    print(table(figures))
    for f in figures:
        if f.note:
            print(f"  {f.group} / {f.name}: {f.note}")
    Path(args.json).write_text(
        json.dumps(
            {
                "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
                "rounds": args.rounds,
                "quick": args.quick,
                "figures": [f.as_json() for f in figures],
            },
            indent=2,
        )
    )
    print(f"written to {args.json}")
    return 0


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", help=f"comma-separated groups: {', '.join(GROUPS)}")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure (default 3)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--json", default="bench/results.json", help="where to write figures")
    return parser.parse_args()


if __name__ == "__main__":
    # The conductors this process runs are set up as `podium serve` and `podium start` set
    # theirs: the adopter of the orphans their sheets leave (SPEC §9 trap 15).
    become_subreaper()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(30),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    sys.exit(anyio.run(main, parse()))
