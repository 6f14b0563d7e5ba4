"""Fuzz of every tool (issue 10 proof suite): arguments drawn from each tool's own input
schema, and hostile variants of them, always get a result or a clean tool error; the server
stays up; another client, probing all the while, never waits a second; a refused call leaves
the store as it was. `--long` runs many more examples."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hostile import probe, served, text_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schema_strategy import from_schema

from podium.core.conductor import Conductor

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

BARE = "Error executing tool"
HOSTILE_VALUES = [
    None, True, -1, 0, 2**63, -(2**63), 1e300, float("inf"), "", "\0", "../../etc/passwd",
    "x" * 10_000, "{{ (9**4096)**4096 }}", "^(a+)+$", [], {}, [[[[[]]]]],
]  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
    | st.sampled_from(HOSTILE_VALUES),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip
# The longest a fuzzed call may take: a schema-valid `run_job` of a valid spec would follow
# its job (at most 50 s).
SLOW_OK_SECONDS = 60


def schema_args(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments the tool's input schema allows (types, enums, bounds as declared); a valid
    long-poll is kept short so the suite fuzzes calls, not waits."""
    return from_schema(schema, caps={"wait_seconds": 0.5})


def hostile_args(props: dict[str, Any], valid: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A schema-valid call with some values swapped for hostile ones, or unknown keys."""

    def swap(keys: list[str], values: list[Any]) -> dict[str, Any]:
        out = dict(valid)
        out.update(zip(keys, values, strict=False))
        return out

    names = [*sorted(props), "not_an_argument"]
    return st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True).flatmap(
        lambda keys: st.lists(json_values, min_size=len(keys), max_size=len(keys)).map(
            lambda values: swap(keys, values)
        )
    )


async def settled(conductor: Conductor) -> None:
    """Wait until nothing moves by itself (a fuzzed `resume` may have started a job), so a
    change seen across a refused call is that call's doing."""
    with anyio.fail_after(30):
        while True:
            jobs, _ = await conductor.list_jobs(limit=500)
            if all(j.status.value not in ("queued", "running") for j in jobs):
                details = [await conductor.get_job(j.job_id, sheet_limit=1000) for j in jobs]
                if all(s.status.value != "running" for d in details for s in d.sheets):
                    return
            await anyio.sleep(0.02)


async def store_fingerprint(conductor: Conductor) -> list[Any]:
    """What a refused call must not change: every job's row and its sheets' states."""
    jobs, _ = await conductor.list_jobs(limit=500)
    out: list[Any] = []
    for job in jobs:
        detail = await conductor.get_job(job.job_id, sheet_limit=1000)
        out.append(
            (
                job.model_dump(mode="json"),
                [(s.sheet_num, s.status.value, s.attempts) for s in detail.sheets],
            )
        )
    return out


async def test_every_tool_answers_every_input(conductor: Conductor, long_run: bool) -> None:
    examples = 2000 if long_run else 200
    async with served(conductor) as s:
        tools = {t.name: t for t in (await s.clients[0].list_tools()).tools}
        job = await conductor.submit_job(
            spec={"name": "fuzz", "sheets": [{"prompt": "true"}]}, start=False
        )
        calls: list[tuple[str, dict[str, Any]]] = []

        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(st.sampled_from(sorted(tools)), st.data())
        def collect(name: str, data: st.DataObject) -> None:
            schema = tools[name].input_schema
            args = data.draw(schema_args(schema), label="schema-valid")
            if data.draw(st.booleans(), label="hostile"):
                args = data.draw(hostile_args(schema.get("properties", {}), args))
            if "job_id" in schema.get("properties", {}) and data.draw(st.booleans()):
                args["job_id"] = job.job_id
            calls.append((name, args))

        collect()
        answered = refused = 0
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            probing: list[Any] = []

            async def run_probe() -> None:
                probing.append(await probe(s, stop))

            tg.start_soon(run_probe)
            for name, args in calls:
                await settled(conductor)
                before = await store_fingerprint(conductor)
                with anyio.fail_after(SLOW_OK_SECONDS):
                    result = await s.call(name, args)
                if result.is_error:
                    refused += 1
                    message = text_of(result)
                    assert message.strip(), (name, args)
                    assert "Traceback" not in message, message
                    assert not message.strip().endswith(BARE + " " + name), (name, args, message)
                    assert await store_fingerprint(conductor) == before, (name, args, message)
                else:
                    answered += 1
            stop.set()
        [latencies] = probing
        assert not latencies.errors, latencies.errors[:3]
        worst = latencies.worst()
        assert worst < 1.0, worst
        with anyio.fail_after(5):
            await s.ok("status", {})
    print(
        f"fuzzed {len(calls)} calls ({answered} answered, {refused} refused, from the tools' "
        f"schemas and hostile variants); {len(latencies.seconds)} probes from another client, "
        f"slowest {worst:.3f}s"
    )
