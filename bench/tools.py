"""Tool latency over stdio through the SDK client, with 10^3, 10^4 and 10^5 stored jobs,
against a trivial tool on a bare MCPServer measured in the same run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

from bench.common import Figure, percentile, scratch
from bench.seed import seed

HERE = Path(__file__).resolve().parent
CALLS = 300
WARMUP = 20


def serve_args() -> list[str]:
    """`podium serve` over stdio with the engine in the process (`--embedded` where the CLI
    has it: elsewhere `serve` may attach to a separate conductor)."""
    base = [sys.executable, "-m", "podium.server.cli", "serve"]
    helptext = subprocess.run([*base, "--help"], capture_output=True, text=True).stdout
    return [*base, "--embedded"] if "--embedded" in helptext else base


async def latencies(
    params: StdioServerParameters, calls: dict[str, Callable[[Client, int], Awaitable[Any]]]
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in calls}
    async with Client(params) as client:
        for name, call in calls.items():
            for i in range(WARMUP):
                await call(client, -i - 1)
            for i in range(CALLS):
                started = time.perf_counter()
                result = await call(client, i)
                out[name].append((time.perf_counter() - started) * 1000)
                if getattr(result, "is_error", False):
                    raise AssertionError(f"{name} failed: {result}")
    return out


def trivial_params() -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=[str(HERE / "trivial_server.py")])


def podium_params(home: Path) -> StdioServerParameters:
    args = serve_args()
    env = {**os.environ, "PODIUM_HOME": str(home), "PODIUM_LOG_LEVEL": "WARNING"}
    return StdioServerParameters(command=args[0], args=args[1:], env=env)


SUBMITTED = "name: bench-submit\nsheets:\n  - prompt: 'true'\n"


def podium_calls(job_id: str) -> dict[str, Callable[[Client, int], Awaitable[Any]]]:
    # submit_job registers the job without starting it: the latency of the call, not of
    # dispatching its sheet.
    return {
        "status": lambda c, i: c.call_tool("status", {}),
        "status job": lambda c, i: c.call_tool("status", {"job_id": job_id}),
        "list_jobs": lambda c, i: c.call_tool("list_jobs", {}),
        "submit_job": lambda c, i: c.call_tool(
            "submit_job", {"spec_yaml": SUBMITTED, "job_id": f"bench-{i + 1000}", "start": False}
        ),
    }


async def run(rounds: int, quick: bool) -> list[Figure]:
    sizes = [1_000, 10_000, 100_000] if not quick else [1_000, 5_000]
    floor = await latencies(
        trivial_params(), {"trivial": lambda c, i: c.call_tool("echo", {"value": i})}
    )
    floor_p99 = percentile(floor["trivial"], 99)
    figures: list[Figure] = [
        Figure("tools", "trivial tool p99 (bare MCPServer)", "ms", [floor_p99])
    ]
    per_size: dict[int, dict[str, float]] = {}
    for size in sizes:
        with scratch(f"tools-{size}") as home:
            one = await seed(home, size)
            measured = await latencies(podium_params(home), podium_calls(one))
        per_size[size] = {name: percentile(v, 99) for name, v in measured.items()}
    smallest, largest = sizes[0], sizes[-1]
    for name in ("status", "status job", "list_jobs", "submit_job"):
        target = {"status": 2.0, "list_jobs": 3.0}.get(name)
        figures.append(
            Figure(
                "tools",
                f"{name} p99 at {largest:,} jobs",
                "ms",
                [per_size[largest][name]],
                "trivial tool",
                [floor_p99],
                target=target,
                note="list_jobs returns 50 summaries" if name == "list_jobs" else "",
            )
        )
        if name in ("status", "list_jobs"):
            figures.append(
                Figure(
                    "tools",
                    f"{name} p99 at {largest:,} vs {smallest:,} jobs",
                    "ms",
                    [per_size[largest][name]],
                    f"{smallest:,} jobs",
                    [per_size[smallest][name]],
                    target=1.3,
                )
            )
        for size in sizes[1:-1]:
            figures.append(
                Figure(
                    "tools",
                    f"{name} p99 at {size:,} jobs",
                    "ms",
                    [per_size[size][name]],
                    "trivial tool",
                    [floor_p99],
                )
            )
    del rounds
    return figures
