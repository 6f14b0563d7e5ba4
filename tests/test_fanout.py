"""Fan-out (issue 17): one declared sheet run as N parallel instances, with `stage`,
`instance` and `fan_count` in its templates, under the job's concurrency limit, and a later
stage that waits for every instance."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for_job

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.errors import SpecError
from podium.core.models import JobStatus, SheetStatus
from podium.core.spec.loader import load_spec

pytestmark = pytest.mark.anyio

# Each instance marks itself running, waits (bounded) until the job's limit of instances run
# together, records how many it saw at its start and end, then leaves. Run one at a time,
# the first instance would never see its siblings and the wait would run out.
WORKER = """\
mkdir -p running seen
touch running/{{ instance }}
echo "{{ stage }} {{ instance }} {{ fan_count }} {{ sheet_name }}" > out-{{ instance }}.txt
ls running | wc -l >> seen/{{ instance }}
for _ in $(seq 250); do
  [ -e released ] && break
  if [ "$(ls running | wc -l)" -ge {{ limit }} ]; then touch released; break; fi
  sleep 0.02
done
sleep 0.2
ls running | wc -l >> seen/{{ instance }}
rm running/{{ instance }}
"""


def fan_spec(limit: int) -> dict[str, Any]:
    return {
        "name": "fan",
        "variables": {"limit": limit},
        "concurrency": {"max_parallel_sheets": limit},
        "sheets": [
            {"name": "prep", "prompt": "echo prepared"},
            {"name": "work", "fan_out": 5, "depends_on": ["prep"], "prompt": WORKER},
            {
                "name": "merge",
                "depends_on": ["work"],
                "prompt": "{% for i in range(1, 6) %}cat out-{{ i }}.txt; {% endfor %}"
                "echo total {{ fan_count }} {{ stage }}",
            },
        ],
    }


@pytest.fixture
async def wide_conductor(make_config: Callable[..., PodiumConfig]) -> Any:
    c = Conductor(make_config(max_concurrent_sheets=8))
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


@pytest.mark.parametrize("limit", [5, 3])
async def test_fan_out_of_five_runs_in_parallel_under_the_job_limit(
    wide_conductor: Conductor, limit: int
) -> None:
    submitted = await wide_conductor.submit_job(spec=fan_spec(limit))
    detail = await wait_for_job(wide_conductor, submitted.job_id)
    assert detail.status is JobStatus.COMPLETED, [s.last_error for s in detail.sheets]
    sheets = {s.name: s for s in detail.sheets}
    workers = [sheets[f"work-{i}"] for i in range(1, 6)]
    assert [s.sheet_num for s in workers] == [2, 3, 4, 5, 6]
    assert all(s.depends_on == [1] for s in workers)
    merge = sheets["merge"]
    assert merge.sheet_num == 7 and merge.depends_on == [2, 3, 4, 5, 6]
    assert merge.started_at is not None
    assert all(s.completed_at is not None and s.completed_at <= merge.started_at for s in workers)

    workspace = Path(submitted.workspace)
    for i in range(1, 6):
        assert (workspace / f"out-{i}.txt").read_text().split() == ["2", str(i), "5", f"work-{i}"]
    seen = [int(n) for i in range(1, 6) for n in (workspace / "seen" / str(i)).read_text().split()]
    assert max(seen) == limit  # as many together as the job allows, never more
    assert (merge.output_tail or "").split("\n")[:5] == [f"2 {i} 5 work-{i}" for i in range(1, 6)]
    assert "total 1 3" in (merge.output_tail or "")


async def test_batch_fan_out_expands_stages(conductor: Conductor) -> None:
    spec = {
        "name": "batch-fan",
        "sheet": {"size": 2, "total_items": 6, "fan_out": {2: 3}, "dependencies": {2: [1], 3: [2]}},
        "prompt": {
            "template": "echo {{ stage }}.{{ instance }}/{{ fan_count }} "
            "{{ start_item }}-{{ end_item }} {{ sheet_num }}/{{ total_sheets }}"
        },
    }
    submitted = await conductor.submit_job(spec=spec)
    detail = await wait_for_job(conductor, submitted.job_id)
    assert detail.status is JobStatus.COMPLETED
    assert [(s.name, s.depends_on) for s in detail.sheets] == [
        ("sheet-1", []),
        ("sheet-2-1", [1]),
        ("sheet-2-2", [1]),
        ("sheet-2-3", [1]),
        ("sheet-3", [2, 3, 4]),
    ]
    assert all(s.status is SheetStatus.COMPLETED for s in detail.sheets)
    assert [(s.output_tail or "").strip() for s in detail.sheets] == [
        "1.1/1 1-2 1/5",
        "2.1/3 3-4 2/5",
        "2.2/3 3-4 3/5",
        "2.3/3 3-4 4/5",
        "3.1/1 5-6 5/5",
    ]


def test_equal_fan_counts_pair_instances() -> None:
    loaded = load_spec(
        data={
            "name": "pairs",
            "sheets": [
                {"name": "a", "fan_out": 2, "prompt": "echo a"},
                {"name": "b", "fan_out": 2, "depends_on": ["a"], "prompt": "echo b"},
                {"name": "c", "fan_out": 3, "depends_on": [2], "prompt": "echo c"},
            ],
        }
    )
    assert [(s.name, s.depends_on) for s in loaded.sheets] == [
        ("a-1", ()),
        ("a-2", ()),
        ("b-1", (1,)),
        ("b-2", (2,)),
        ("c-1", (3, 4)),
        ("c-2", (3, 4)),
        ("c-3", (3, 4)),
    ]


@pytest.mark.parametrize(
    ("spec", "path", "words"),
    [
        (
            {
                "sheets": [
                    {"name": "a", "fan_out": 2, "prompt": "x"},
                    {"name": "a-2", "prompt": "y"},
                ]
            },
            "sheets.1.name",
            "instance 2",
        ),
        ({"sheets": [{"fan_out": 0, "prompt": "x"}]}, "sheets.0.fan_out", "greater than"),
        (
            {"sheets": [{"fan_out": 6000, "prompt": "x"}, {"fan_out": 6000, "prompt": "y"}]},
            "sheets",
            "12000 sheets",
        ),
        (
            {
                "sheet": {"size": 1, "total_items": 2, "fan_out": {"7": 2}},
                "prompt": {"template": "x"},
            },
            "sheet.fan_out.7",
            "no sheet 7",
        ),
        (
            {"sheets": [{"name": "n" * 63, "fan_out": 10, "prompt": "x"}]},
            "sheets.0.name",
            "longer than 64",
        ),
    ],
)
def test_fan_out_errors_name_the_field(spec: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(data={"name": "bad", **spec})
    messages = {e.path: e.message for e in caught.value.errors}
    assert path in messages, messages
    assert words in messages[path]


async def test_through_mcp_the_schema_and_validate_spec_know_fan_out(conductor: Conductor) -> None:
    from mcp import Client

    from podium.server.app import PodiumServer

    server = PodiumServer(conductor)
    async with server.running(), Client(server.mcp) as client:
        resource = await client.read_resource("podium://spec/schema")
        schema = json.loads(getattr(resource.contents[0], "text", ""))
        sheet_fields = set(schema["$defs"]["SheetSpec"]["properties"])
        assert {
            "fan_out",
            "skip_when",
            "skip_when_command",
            "fallbacks",
            "cadenzas",
        } <= sheet_fields
        assert {"notifications", "on_success", "context", "prelude", "prompt_assembly"} <= set(
            schema["properties"]
        )
        result = await client.call_tool("validate_spec", {"spec": fan_spec(5)})
        report = result.structured_content
        assert report is not None and report["valid"], report
        assert [(s["name"], s["depends_on"]) for s in report["sheets"]] == [
            ("prep", []),
            *[(f"work-{i}", [1]) for i in range(1, 6)],
            ("merge", [2, 3, 4, 5, 6]),
        ]
