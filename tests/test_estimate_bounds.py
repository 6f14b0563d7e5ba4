"""`estimate`'s answer is bounded and says what it leaves out (SPEC §9 trap 12): the sheets it
lists, the critical path's sheet numbers, and the sheets its cost covers. Pure: the history is
built by hand, as the conductor would gather it."""

from __future__ import annotations

from podium.core.estimate import (
    MAX_ESTIMATE_BYTES,
    MAX_LISTED_PATH,
    MAX_LISTED_SHEETS,
    History,
    SheetSample,
    SheetSamples,
    estimate,
)
from podium.core.spec.loader import load_spec


def _samples(*runs: SheetSample) -> SheetSamples:
    found = SheetSamples()
    for run in runs:
        found.add(run)
    return found


def _shell_history(seconds: float = 0.5) -> History:
    history = History()
    history.by_instrument["shell"] = _samples(SheetSample(seconds, None, 1))
    return history


def test_a_long_chain_lists_a_bounded_page_of_sheets_and_of_its_critical_path() -> None:
    """10,000 chained sheets of the longest names: the answer stays under its cap, and the
    totals and the note say how much was left out."""
    count = 10_000
    sheets = [
        {
            "name": f"s{n:05d}-" + "x" * 57,
            "prompt": "true",
            "depends_on": [n - 1] if n > 1 else [],
        }
        for n in range(1, count + 1)
    ]
    loaded = load_spec(data={"name": "long-chain", "sheets": sheets})
    guess = estimate(loaded, _shell_history(), max_concurrent_sheets=4)

    assert guess.sheets_total == count and len(guess.sheets) == MAX_LISTED_SHEETS
    assert [s.sheet_num for s in guess.sheets] == list(range(1, MAX_LISTED_SHEETS + 1))
    assert guess.critical_path_total == count
    assert guess.critical_path == list(range(1, MAX_LISTED_PATH + 1))
    assert guess.critical_path_seconds == 5000.0
    assert f"sheets lists the first {MAX_LISTED_SHEETS} of {count}" in guess.note, guess.note
    assert f"critical_path the first {MAX_LISTED_PATH} of its {count}" in guess.note
    assert len(guess.model_dump_json().encode()) <= MAX_ESTIMATE_BYTES


def test_a_small_spec_lists_everything_and_says_nothing_of_caps() -> None:
    loaded = load_spec(
        data={
            "name": "small",
            "sheets": [{"prompt": "true"}, {"prompt": "true", "depends_on": [1]}],
        }
    )
    guess = estimate(loaded, _shell_history(), max_concurrent_sheets=4)
    assert len(guess.sheets) == guess.sheets_total == 2
    assert guess.critical_path == [1, 2] and guess.critical_path_total == 2
    assert "lists the first" not in guess.note and "critical_path the first" not in guess.note


def test_a_spec_without_history_still_lists_a_bounded_page() -> None:
    loaded = load_spec(
        data={
            "name": "fresh",
            "sheet": {"size": 1, "total_items": 500},
            "prompt": {"template": "true"},
        }
    )
    guess = estimate(loaded, History(), max_concurrent_sheets=4)
    assert guess.note.startswith("no history")
    assert len(guess.sheets) == MAX_LISTED_SHEETS and guess.sheets_total == 500
    assert guess.critical_path == [] and guess.critical_path_total == 0
    assert f"sheets lists the first {MAX_LISTED_SHEETS} of 500" in guess.note, guess.note


def test_a_cost_from_some_sheets_only_says_how_many_it_covers() -> None:
    """Two of three sheets ran on an instrument that reports a cost: the figure is theirs,
    and the answer says it leaves the third out rather than passing it off as the job's."""
    history = History(earlier_runs=1)
    history.by_sheet["paid"] = _samples(SheetSample(1.0, 0.25, 1))
    history.by_sheet["also-paid"] = _samples(SheetSample(1.0, 0.5, 1))
    history.by_sheet["free"] = _samples(SheetSample(1.0, None, 1))
    spec = {
        "name": "partly-paid",
        "sheets": [
            {"name": "paid", "prompt": "true"},
            {"name": "also-paid", "prompt": "true"},
            {"name": "free", "prompt": "true"},
        ],
    }
    guess = estimate(load_spec(data=spec), history, max_concurrent_sheets=4)
    assert guess.expected_cost_usd == 0.75
    assert guess.cost_sheets == 2
    assert "expected_cost_usd covers 2 of 3 sheets" in guess.note, guess.note

    everything = History(earlier_runs=1)
    for name in ("paid", "also-paid", "free"):
        everything.by_sheet[name] = _samples(SheetSample(1.0, 0.25, 1))
    whole = estimate(load_spec(data=spec), everything, max_concurrent_sheets=4)
    assert whole.cost_sheets == 3 and whole.expected_cost_usd == 0.75
    assert "expected_cost_usd covers" not in whole.note, whole.note

    none = estimate(load_spec(data=spec), _shell_history(), max_concurrent_sheets=4)
    assert none.expected_cost_usd is None and none.cost_sheets == 0
    assert "no instrument reported a cost" in none.note
