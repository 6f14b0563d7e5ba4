"""`estimate`: expected duration (and cost) of a spec from earlier runs (issue 18)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import wait_for_job

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.estimate import critical_path, simulate
from podium.core.models import JobStatus

pytestmark = pytest.mark.anyio

# Sheet seconds: a 1.2, b 0.6 (after a), c 0.9, d 0.4 (after b and c), e 0.9.
# Two at a time: a and c start; e takes c's slot at 0.9; b follows a at 1.2; d at 1.8 -> 2.2 s.
# Critical path a -> b -> d = 2.2 s; one after another = 4.0 s.
SLEEPS = {"a": 1.2, "b": 0.6, "c": 0.9, "d": 0.4, "e": 0.9}
DEPS = {"b": ["a"], "d": ["b", "c"]}


def timed_spec(name: str = "timed", parallel: int = 2) -> dict[str, object]:
    return {
        "name": name,
        "concurrency": {"max_parallel_sheets": parallel},
        "sheets": [
            {"name": key, "prompt": f"sleep {seconds}", "depends_on": DEPS.get(key, [])}
            for key, seconds in SLEEPS.items()
        ],
    }


async def _run(conductor: Conductor, spec: dict[str, object]) -> float:
    job = await conductor.submit_job(spec=spec)
    done = await wait_for_job(conductor, job.job_id, timeout=60)
    assert done.status is JobStatus.COMPLETED
    assert done.started_at is not None and done.completed_at is not None
    return (done.completed_at - done.started_at).total_seconds()


async def test_estimate_after_three_runs_is_within_30_percent_of_the_next(
    make_config: Callable[..., PodiumConfig],
) -> None:
    async with Conductor(make_config(max_concurrent_sheets=4)) as conductor:
        fresh = await conductor.estimate(spec=timed_spec())
        assert fresh.expected_seconds is None
        assert fresh.confidence == "none"
        assert fresh.note.startswith("no history")
        assert {s.basis for s in fresh.sheets} == {"none"}

        for _ in range(3):
            await _run(conductor, timed_spec())
        guess = await conductor.estimate(spec=timed_spec())
        actual = await _run(conductor, timed_spec())

        assert guess.expected_seconds is not None
        assert abs(guess.expected_seconds - actual) <= 0.3 * actual, (guess, actual)
        assert guess.earlier_runs == 3
        assert guess.samples == 15 and guess.attempts == 15
        assert guess.confidence == "high"
        assert guess.parallelism == 2
        assert guess.critical_path == [1, 2, 4]
        assert guess.critical_path_seconds is not None
        assert guess.critical_path_seconds == pytest.approx(2.2, rel=0.3)
        assert guess.sequential_seconds == pytest.approx(4.0, rel=0.3)
        assert {s.basis for s in guess.sheets} == {"same_sheet"}
        by_name = {s.name: s for s in guess.sheets}
        assert by_name["a"].expected_seconds == pytest.approx(1.2, rel=0.3)
        assert by_name["d"].expected_seconds == pytest.approx(0.4, rel=0.5)
        assert guess.expected_cost_usd is None and "no instrument reported a cost" in guess.note

        # The same sheets one at a time take about as long as all of them in a row.
        serial = await conductor.estimate(spec=timed_spec(parallel=1))
        assert serial.parallelism == 1
        assert serial.expected_seconds is not None and serial.sequential_seconds is not None
        assert serial.expected_seconds >= serial.sequential_seconds
        assert serial.expected_seconds > guess.expected_seconds * 1.5


async def test_a_new_name_draws_on_the_instrument_and_says_so(
    make_config: Callable[..., PodiumConfig],
) -> None:
    async with Conductor(make_config(max_concurrent_sheets=4)) as conductor:
        await _run(conductor, timed_spec())
        other = await conductor.estimate(
            spec={
                "name": "brand-new",
                "sheets": [{"name": "x", "prompt": "sleep 1"}, {"prompt": "sleep 1"}],
            }
        )
        assert other.earlier_runs == 0
        assert {s.basis for s in other.sheets} == {"same_instrument"}
        assert other.confidence == "low"
        assert "no earlier run of 'brand-new'" in other.note
        assert other.expected_seconds is not None


def test_simulation_respects_dependencies_and_slots() -> None:
    durations = {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
    independent: dict[int, list[int]] = {1: [], 2: [], 3: [], 4: []}
    assert simulate(durations, independent, 4) == 1.0
    assert simulate(durations, independent, 2) == 2.0
    assert simulate(durations, independent, 1) == 4.0
    chain = {1: [], 2: [1], 3: [2], 4: [3]}
    assert simulate(durations, chain, 4) == 4.0
    assert critical_path(durations, chain) == (4.0, [1, 2, 3, 4])
    diamond = {1: [], 2: [1], 3: [1], 4: [2, 3]}
    weights = {1: 1.0, 2: 5.0, 3: 2.0, 4: 1.0}
    assert critical_path(weights, diamond) == (7.0, [1, 2, 4])
    assert simulate(weights, diamond, 1) == 9.0
    assert simulate(weights, diamond, 2) == 7.0


async def test_a_sheet_is_estimated_on_the_instrument_it_will_start_on(
    make_config: Callable[..., PodiumConfig], home: Path, tmp_path: Path
) -> None:
    """A sheet whose own instrument is not installed starts on its first installed
    fallback: that is the instrument whose history it draws on."""
    (home / "instruments").mkdir(exist_ok=True)
    (home / "instruments" / "gone.yaml").write_text(
        f'name: gone\nexecutable: {tmp_path / "no-such-cli"}\nargs: ["{{prompt}}"]\n'
    )
    async with Conductor(make_config(max_concurrent_sheets=4)) as conductor:
        await _run(conductor, timed_spec())
        guess = await conductor.estimate(
            spec={
                "name": "on-a-fallback",
                "instrument": "gone",
                "fallbacks": ["shell"],
                "sheets": [{"name": "x", "prompt": "sleep 1"}],
            }
        )
        assert [(s.instrument, s.basis) for s in guess.sheets] == [("shell", "same_instrument")]
        assert guess.expected_seconds is not None
