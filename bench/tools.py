"""Tool latency over stdio through the SDK client, with 10^3, 10^4 and 10^5 stored jobs,
against a trivial tool on a bare MCPServer measured in the same run."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

from bench.common import Figure, percentile, scratch
from bench.seed import seed

HERE = Path(__file__).resolve().parent
CALLS = 300
WARMUP = 20
BLOCK = 25
Calls = dict[str, Callable[[Client, int], Awaitable[Any]]]


def serve_args() -> list[str]:
    """`podium serve` over stdio with the engine in the process (`--embedded` where the CLI
    has it: elsewhere `serve` may attach to a separate conductor)."""
    base = [sys.executable, "-m", "podium.server.cli", "serve"]
    helptext = subprocess.run([*base, "--help"], capture_output=True, text=True).stdout
    args = [*base, "--embedded"] if "--embedded" in helptext else base
    return [*args, "--log-level", "WARNING"] if "--log-level" in helptext else args


async def latencies(
    params: StdioServerParameters, calls: dict[str, Callable[[Client, int], Awaitable[Any]]]
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in calls}
    async with Client(params) as client:
        for name, call in calls.items():
            for i in range(WARMUP):
                await call(client, -i - 1)
            for i in range(CALLS):
                out[name].append(await timed(name, call, client, i))
    return out


async def timed(
    name: str, call: Callable[[Client, int], Awaitable[Any]], client: Client, i: int
) -> float:
    started = time.perf_counter()
    result = await call(client, i)
    elapsed = (time.perf_counter() - started) * 1000
    if getattr(result, "is_error", False):
        raise AssertionError(f"{name} failed: {result}")
    return elapsed


async def interleaved(
    floor_params: StdioServerParameters,
    servers: dict[int, tuple[StdioServerParameters, Calls]],
) -> tuple[list[float], dict[int, dict[str, list[float]]]]:
    """The trivial server and every `servers` one up at once, their calls in alternating
    blocks of `BLOCK` (each block's calls back to back, as `latencies` makes them): the
    floor and the figures of every home size sample the same stretches of a machine whose
    load moves (a floor or a size measured a minute apart saw other moments, and p99 is the
    moments' worst)."""
    floor: list[float] = []
    out = {key: {name: [] for name in calls} for key, (_, calls) in servers.items()}
    async with AsyncExitStack() as stack:
        trivial = await stack.enter_async_context(Client(floor_params))
        clients = {
            key: await stack.enter_async_context(Client(params))
            for key, (params, _) in servers.items()
        }
        names = list(next(iter(servers.values()))[1])
        for name in names:
            for i in range(WARMUP):
                await echo(trivial, -i - 1)
                for key, (_, calls) in servers.items():
                    await calls[name](clients[key], -i - 1)
            for start in range(0, CALLS, BLOCK):
                block = range(start, min(CALLS, start + BLOCK))
                for i in block:
                    floor.append(await timed("trivial", echo, trivial, i))
                for key, (_, calls) in servers.items():
                    for i in block:
                        out[key][name].append(await timed(name, calls[name], clients[key], i))
    return floor, out


def echo(c: Client, i: int) -> Awaitable[Any]:
    return c.call_tool("echo", {"value": i})


def trivial_params() -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=[str(HERE / "trivial_server.py")])


def podium_params(home: Path) -> StdioServerParameters:
    args = serve_args()
    env = {**os.environ, "PODIUM_HOME": str(home), "PODIUM_LOG_LEVEL": "WARNING"}
    return StdioServerParameters(command=args[0], args=args[1:], env=env)


SUBMITTED = "name: bench-submit\nsheets:\n  - prompt: 'true'\n"


def podium_calls(job_id: str, tag: str) -> Calls:
    # submit_job registers the job without starting it: the latency of the call, not of
    # dispatching its sheet.
    return {
        "status": lambda c, i: c.call_tool("status", {}),
        "status job": lambda c, i: c.call_tool("status", {"job_id": job_id}),
        "list_jobs": lambda c, i: c.call_tool("list_jobs", {}),
        "submit_job": lambda c, i: c.call_tool(
            "submit_job",
            {"spec_yaml": SUBMITTED, "job_id": f"bench-{tag}-{i + 1000}", "start": False},
        ),
    }


def p99(values: list[float]) -> float:
    return percentile(values, 99)


async def run(rounds: int, quick: bool) -> list[Figure]:
    sizes = [1_000, 10_000, 100_000] if not quick else [1_000, 5_000]
    names = ("status", "status job", "list_jobs", "submit_job")
    # Per size: the p99 of each call in each round, and the trivial tool's p99 over the calls
    # interleaved with them (same machine, same moments; one floor for every size).
    ours: dict[int, dict[str, list[float]]] = {n: {k: [] for k in names} for n in sizes}
    p50s: dict[int, dict[str, list[float]]] = {n: {k: [] for k in names} for n in sizes}
    floor: dict[int, list[float]] = {n: [] for n in sizes}
    floor50: dict[int, list[float]] = {n: [] for n in sizes}
    with ExitStack() as homes:
        seeded = {}
        for size in sizes:
            home = homes.enter_context(scratch(f"tools-{size}"))
            seeded[size] = (home, await seed(home, size))
        for round_no in range(rounds):
            servers = {
                size: (podium_params(home), podium_calls(one, f"{size}-{round_no}"))
                for size, (home, one) in seeded.items()
            }
            trivial, measured = await interleaved(trivial_params(), servers)
            for size in sizes:
                floor[size].append(p99(trivial))
                floor50[size].append(percentile(trivial, 50))
                for name in names:
                    ours[size][name].append(p99(measured[size][name]))
                    p50s[size][name].append(percentile(measured[size][name], 50))
    smallest, largest = sizes[0], sizes[-1]
    figures: list[Figure] = [
        Figure(
            "tools",
            f"trivial tool p99, p50 {statistics.median(floor50[largest]):.2f} ms",
            "ms",
            floor[largest],
            note="a bare MCPServer over stdio; the floor every figure below is compared with",
        )
    ]
    for name in names:
        target = {"status": 2.0, "list_jobs": 3.0}.get(name)
        for size in sizes:
            p50 = statistics.median(p50s[size][name])
            figures.append(
                Figure(
                    "tools",
                    f"{name} p99 at {size:,} jobs (p50 {p50:.2f} ms)",
                    "ms",
                    ours[size][name],
                    "trivial tool",
                    floor[size],
                    target=target if size == largest else None,
                    note="50 summaries" if name == "list_jobs" and size == largest else "",
                )
            )
        if name in ("status", "list_jobs"):
            figures.append(
                Figure(
                    "tools",
                    f"{name} p99 at {largest:,} vs {smallest:,} jobs",
                    "ms",
                    ours[largest][name],
                    f"{smallest:,} jobs",
                    ours[smallest][name],
                    target=1.3,
                )
            )
    return figures
