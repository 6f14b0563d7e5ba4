"""Fuzz of every tool (issue 10 proof suite): random and hostile arguments always get a
result or a clean tool error, the server stays up, another client keeps its answers, and a
refused submit leaves the database unchanged. `--long` runs many more examples."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from hostile import served, text_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


async def test_every_tool_answers_every_input(conductor: Conductor, long_run: bool) -> None:
    examples = 400 if long_run else 40
    async with served(conductor) as s:
        tools = {t.name: t for t in (await s.clients[0].list_tools()).tools}
        job = await conductor.submit_job(spec={"name": "fuzz", "sheets": [{"prompt": "true"}]})
        calls: list[tuple[str, dict[str, Any]]] = []

        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(
            st.sampled_from(sorted(tools)),
            st.data(),
        )
        def collect(name: str, data: st.DataObject) -> None:
            props = tools[name].input_schema.get("properties", {})
            keys = data.draw(st.lists(st.sampled_from(sorted(props) or ["x"]), max_size=4))
            args = {k: data.draw(json_values) for k in keys}
            if "job_id" in props and data.draw(st.booleans()):
                args["job_id"] = job.job_id
            calls.append((name, args))

        collect()
        worst = 0.0
        for name, args in calls:
            jobs_before = (await conductor.list_jobs(limit=500))[0]
            result = await s.call(name, args)
            if result.is_error:
                message = text_of(result)
                assert message.strip(), (name, args)
                assert "Traceback" not in message, message
                assert not message.strip().endswith(BARE + " " + name), (name, args, message)
                if name == "submit_job":
                    assert (await conductor.list_jobs(limit=500))[0] == jobs_before
            t0 = time.monotonic()
            assert not (await s.call("status", {}, client=1)).is_error
            worst = max(worst, time.monotonic() - t0)
        assert worst < 1.0, worst
        with anyio.fail_after(5):
            await s.ok("status", {})
    print(f"fuzzed {len(calls)} calls; slowest status from another client {worst:.3f}s")
