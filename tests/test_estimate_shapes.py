"""`estimate` on shapes beyond a spec run three times before (issue 18), through the MCP tool
of a real in-memory client: history from jobs of other names that did not complete, and a
spec of approval gates only, and a batch of another size."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mcp import Client
from test_approvals import finished
from test_transports import call

from podium.core.conductor import Conductor
from podium.core.history_samples import batch_items
from podium.core.spec.loader import load_spec
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(conductor: Conductor) -> AsyncIterator[Client]:
    server = PodiumServer(conductor)
    async with server.running(), Client(server.mcp) as c:
        yield c


async def test_a_new_name_draws_on_sheets_that_completed_in_jobs_that_did_not(
    client: Client,
) -> None:
    """A job of another name that failed (one sheet failed, one completed) and one that was
    cancelled after a sheet completed: their completed sheets are what the instrument
    takes, as the same name's failed runs are."""
    failed = {
        "name": "half-done",
        "on_failure": "continue",
        "retry": {"max_retries": 0},
        "sheets": [{"name": "work", "prompt": "sleep 0.4"}, {"name": "bad", "prompt": "exit 3"}],
    }
    job_id = (await call(client, "submit_job", {"spec": failed}))["job_id"]
    assert (await finished(client, job_id))["status"] == "failed"

    guess = await call(
        client, "estimate", {"spec": {"name": "brand-new", "sheets": [{"prompt": "sleep 1"}]}}
    )
    assert guess["earlier_runs"] == 0
    [sheet] = guess["sheets"]
    assert sheet["basis"] == "same_instrument", guess
    assert sheet["samples"] == 1
    # The completed sheet's 0.4 s (as the runner measured it: on a loaded machine it may
    # start counting late), not a guess.
    assert 0.2 <= sheet["expected_seconds"] < 5, guess
    assert "no earlier run of 'brand-new'" in guess["note"]
    assert not guess["note"].startswith("no history")


async def test_an_estimate_of_approval_gates_only_claims_no_samples(client: Client) -> None:
    spec = {
        "name": "just-ask",
        "sheets": [
            {"name": "first", "instrument": "approval", "prompt": "Go?"},
            {"name": "second", "instrument": "approval", "prompt": "Sure?", "depends_on": [1]},
        ],
    }
    guess = await call(client, "estimate", {"spec": spec})
    assert guess["expected_seconds"] == 0.0 and guess["samples"] == 0
    assert {s["basis"] for s in guess["sheets"]} == {"assumed"}
    # Nothing was drawn from other jobs, and the note must not say it was.
    assert "from other jobs' sheets" not in guess["note"], guess["note"]
    assert "no sample of its instruments" in guess["note"]
    assert "approval sheet(s) without history" in guess["note"]


async def test_an_earlier_run_of_another_shape_counts_its_samples_once_and_not_its_duration(
    client: Client,
) -> None:
    """The name's earlier run had 3 chained sheets; the spec estimated now has 8 others of
    that name. Their figures come from the earlier sheets (the instrument's), but `samples`
    counts those 3 runs once (not once per sheet that draws on them), and the earlier run's
    duration is not offered as what this shape takes."""
    earlier = {
        "name": "reshaped",
        "sheets": [
            {"name": "a", "prompt": "sleep 0.2"},
            {"name": "b", "depends_on": ["a"], "prompt": "sleep 0.2"},
            {"name": "c", "depends_on": ["b"], "prompt": "sleep 0.2"},
        ],
    }
    job_id = (await call(client, "submit_job", {"spec": earlier}))["job_id"]
    assert (await finished(client, job_id))["status"] == "completed"

    same = await call(client, "estimate", {"spec": earlier})
    assert same["samples"] == 3 and same["observed_seconds"] is not None, same

    wider = {"name": "reshaped", "sheets": [{"prompt": "sleep 0.2"} for _ in range(8)]}
    guess = await call(client, "estimate", {"spec": wider})
    assert {s["basis"] for s in guess["sheets"]} == {"same_instrument"}, guess
    assert all(s["samples"] == 3 for s in guess["sheets"]), guess
    assert guess["samples"] == 3, guess
    assert guess["observed_seconds"] is None, guess
    assert "other sheets" in guess["note"], guess["note"]


def batch_spec(size: int, total_items: int) -> dict[str, object]:
    return {
        "name": "resized",
        "concurrency": {"max_parallel_sheets": 4},
        "sheet": {"size": size, "total_items": total_items},
        "prompt": {"template": "sleep $(( ({{ end_item }} - {{ start_item }} + 1) * 2 ))e-1"},
    }


async def test_a_batch_of_another_size_is_another_shape_though_its_sheets_share_names(
    client: Client,
) -> None:
    """`sheet-1`..`sheet-4` of 1 item each ran before; now the spec puts 2 items in each of
    its 4 sheets, so `sheet-1` is other work than it was. Its figures come from the
    instrument's runs, not from the sheet of that name, and the earlier run's duration is
    not offered as this one's."""
    job_id = (await call(client, "submit_job", {"spec": batch_spec(1, 4)}))["job_id"]
    assert (await finished(client, job_id))["status"] == "completed"

    same = await call(client, "estimate", {"spec": batch_spec(1, 4)})
    assert {s["basis"] for s in same["sheets"]} == {"same_sheet"}, same
    assert same["observed_seconds"] is not None and "other" not in same["note"], same

    resized = await call(client, "estimate", {"spec": batch_spec(2, 8)})
    assert [s["name"] for s in resized["sheets"]] == [f"sheet-{n}" for n in range(1, 5)]
    assert {s["basis"] for s in resized["sheets"]} == {"same_instrument"}, resized
    assert resized["observed_seconds"] is None, resized
    assert resized["confidence"] == "low", resized
    assert "1 of them with other sheets than this spec's" in resized["note"], resized["note"]
    assert "items per sheet" in resized["note"], resized["note"]

    # A last sheet that holds fewer items than before is another sheet too; the rest match.
    shorter = await call(client, "estimate", {"spec": batch_spec(1, 3)})
    assert [s["basis"] for s in shorter["sheets"]] == ["same_sheet"] * 3, shorter
    longer_last = await call(client, "estimate", {"spec": batch_spec(3, 4)})
    assert [s["basis"] for s in longer_last["sheets"]] == ["same_instrument"] * 2, longer_last


def test_a_stored_batch_spec_gives_each_sheet_the_items_the_loader_gave_it() -> None:
    spec = {
        "name": "fanned",
        "sheet": {"size": 2, "total_items": 5, "fan_out": {"2": 2}, "dependencies": {"3": [2]}},
        "prompt": {"template": "true"},
    }
    loaded = load_spec(data=spec)
    assert batch_items(loaded.to_storable()) == {
        s.sheet_num: (s.start_item, s.end_item) for s in loaded.sheets
    }
    assert batch_items(loaded.to_storable())[3] == (3, 4)
    assert batch_items({"sheets": [{"prompt": "true"}]}) == {}
    assert batch_items({"sheet": {"size": "?"}}) == {}
