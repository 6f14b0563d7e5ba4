"""Instrument profiles are YAML a user writes, and none can hurt the conductor: their
regexes never run on Python's `re` inside it (catastrophic backtracking), a broken regex or a
boolean given as a word or a number is refused when the profile loads, naming the key, and a
JSON answer past the structured-output limit is reported as such, never lost silently."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import wait_for_job, wait_until

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.errors import FieldError, SpecError
from podium.core.instruments.catalog import profile_errors
from podium.core.instruments.profile import InstrumentProfile
from podium.core.models import ErrorCategory, JobStatus, SheetStatus
from podium.core.runner import regex, runner
from podium.core.spec import load_spec

pytestmark = pytest.mark.anyio

# `(a+)+$` over 50 `a`s then a `b`: Python's re tries 2**50 ways before it gives up.
EVIL_OUTPUT = "a" * 50 + "b"
PRINT_EVIL = f"printf '%s\\n' '{EVIL_OUTPUT}'; exit 1"
# A lookbehind RE2 cannot run: this one goes to the bounded child.
LOOKBEHIND_EVIL = "(a+)+(?<!x)$"


def profile_yaml(name: str, **fields: Any) -> str:
    data: dict[str, Any] = {"name": name, "executable": "bash", "args": ["-c", "{prompt}"]}
    data.update(fields)
    return json.dumps(data)


def write_profiles(home: Path, **profiles: str) -> Path:
    folder = home / "instruments"
    folder.mkdir(exist_ok=True)
    for name, text in profiles.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


@pytest.fixture
async def evil_conductor(
    home: Path, make_config: Callable[..., PodiumConfig]
) -> AsyncIterator[Conductor]:
    write_profiles(
        home,
        evil=profile_yaml("evil", patterns={"transient": ["(a+)+$"]}),
        lookbehind=profile_yaml("lookbehind", patterns={"auth": [LOOKBEHIND_EVIL]}),
        slow=profile_yaml(
            "slow", patterns={"rate_limit": [{"regex": LOOKBEHIND_EVIL}], "auth": ["a+b"]}
        ),
    )
    c = Conductor(make_config())
    await c.start()
    try:
        assert c.catalog is not None and c.catalog.load_errors == []
        yield c
    finally:
        await c.stop()


def one_sheet(name: str, instrument: str, prompt: str) -> dict[str, Any]:
    return {
        "name": name,
        "instrument": instrument,
        "retry": {"max_retries": 0},
        "sheets": [{"prompt": prompt}],
    }


# --- 1. regexes: bounded at run time, checked at load -------------------------------------


async def test_a_catastrophic_profile_pattern_neither_stalls_nor_stops_dispatch(
    evil_conductor: Conductor,
) -> None:
    """`(a+)+$` on a failed run's output: RE2 answers (no match), the sheet fails as a plain
    failure, and the conductor goes on dispatching other jobs' sheets."""
    c = evil_conductor
    evil = await c.submit_job(spec=one_sheet("evil", "evil", PRINT_EVIL))
    other = await c.submit_job(spec=one_sheet("other", "shell", "true"))
    done = await wait_for_job(c, evil.job_id)
    assert done.status is JobStatus.FAILED
    (sheet,) = done.sheets
    assert sheet.error_category is ErrorCategory.FAILED
    assert sheet.last_error == "exited with code 1"
    assert (await wait_for_job(c, other.job_id)).status is JobStatus.COMPLETED
    after = await c.submit_job(spec=one_sheet("after", "shell", "true"))
    assert (await wait_for_job(c, after.job_id)).status is JobStatus.COMPLETED


async def test_a_pattern_re2_cannot_run_is_cut_at_the_limit_and_named(
    evil_conductor: Conductor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(regex, "REGEX_TIME_LIMIT_SECONDS", 0.5)
    job = await evil_conductor.submit_job(spec=one_sheet("cut", "lookbehind", PRINT_EVIL))
    done = await wait_for_job(evil_conductor, job.job_id)
    (sheet,) = done.sheets
    assert sheet.error_category is ErrorCategory.FAILED
    error = sheet.last_error or ""
    assert error.startswith("exited with code 1; "), error
    assert "patterns.auth.0" in error and "0.5 s limit" in error, error


async def test_other_jobs_run_while_a_pattern_is_searched_and_cancel_ends_the_search(
    evil_conductor: Conductor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the child searching a backtracking pattern is alive, another job is
    dispatched and completes; cancelling the job ends the search and its child."""
    monkeypatch.setattr(regex, "REGEX_TIME_LIMIT_SECONDS", 600.0)
    c = evil_conductor
    slow = await c.submit_job(spec=one_sheet("slow", "slow", PRINT_EVIL))
    me = psutil.Process()

    def searching() -> list[psutil.Process]:
        found = []
        for child in me.children(recursive=True):
            try:
                if "-I" in child.cmdline() and "-c" in child.cmdline():
                    found.append(child)
            except psutil.Error:
                continue
        return found

    async def search_started() -> bool:
        return bool(searching())

    await wait_until(search_started, timeout=30)
    other = await c.submit_job(spec=one_sheet("other", "shell", "true"))
    assert (await wait_for_job(c, other.job_id)).status is JobStatus.COMPLETED
    children = searching()
    assert children, "the search ended before the other job ran: nothing was shown"
    cancelled = await c.cancel_job(slow.job_id)
    assert cancelled.status is JobStatus.CANCELLED
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


async def test_patterns_answer_as_python_re_would_and_a_stuck_one_keeps_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RE2 and the child answer alike (case-insensitive, groups, non-ASCII text); the answers
    before a pattern cut at the limit are kept, the pattern is named as cut."""
    monkeypatch.setattr(regex, "REGEX_TIME_LIMIT_SECONDS", 0.5)
    patterns = ["retry in (?P<secs>[0-9]+)s", "caf(?P<e>é)", "(?<=x)y", "absent", LOOKBEHIND_EVIL]
    outcomes = await regex.search_patterns(
        patterns, f"RETRY IN 30s\nCAFÉ xy\n{EVIL_OUTPUT}\n", kill_grace_seconds=0.5
    )
    got = [(o.match.text, o.match.groups) if o.match else o.error for o in outcomes]
    assert got[:4] == [
        ("RETRY IN 30s", {"secs": "30"}),
        ("CAFÉ", {"e": "É"}),
        ("y", {}),
        None,
    ]
    assert "0.5 s limit" in (got[4] or ""), got[4]
    ascii_only = await regex.search_patterns(["(a+)+$"], EVIL_OUTPUT, kill_grace_seconds=0.5)
    assert ascii_only == [regex.PatternOutcome()]  # RE2: no match, at once


def test_invalid_profile_regexes_are_refused_naming_each_one(tmp_path: Path) -> None:
    write_profiles(
        tmp_path,
        broken=profile_yaml(
            "broken",
            patterns={
                "billing": ["fine", "(unclosed"],
                "rate_limit": [{"regex": "ok"}, {"regex": "[z-a]"}],
                "transient": ["*oops"],
            },
        ),
    )
    (error,) = profile_errors(tmp_path / "instruments")
    _, _, why = error.partition(": ")
    problems = dict(p.split(": ", 1) for p in why.split("; "))
    assert set(problems) == {
        "patterns.billing.1",
        "patterns.rate_limit.1.regex",
        "patterns.transient.0",
    }, why
    assert problems["patterns.billing.1"].startswith("not a valid regular expression: ")
    assert "missing )" in problems["patterns.billing.1"]
    assert "bad character range" in problems["patterns.rate_limit.1.regex"]


def test_an_overlong_profile_regex_is_refused() -> None:
    with pytest.raises(ValueError, match=r"at most 4096 characters"):
        InstrumentProfile.model_validate(
            {"name": "long", "executable": "bash", "patterns": {"auth": ["a" * 5000]}}
        )


# --- 2. booleans are true or false --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "got"),
    [("yes", '"yes"'), ("true", '"true"'), ("off", '"off"'), (1, "1"), (0, "0"), (1.0, "1.0")],
)
def test_a_profile_boolean_given_a_word_or_a_number_is_refused(
    tmp_path: Path, value: Any, got: str
) -> None:
    write_profiles(tmp_path, loose=profile_yaml("loose", retry_feedback=value))
    (error,) = profile_errors(tmp_path / "instruments")
    assert error.endswith(f"retry_feedback: must be true or false (got {got})"), error


def test_yaml_booleans_still_load_in_a_profile(tmp_path: Path) -> None:
    write_profiles(
        tmp_path,
        plain="name: plain\nexecutable: bash\nargs: ['-c', '{prompt}']\nretry_feedback: no\n",
    )
    assert profile_errors(tmp_path / "instruments") == []


def spec_errors(text: str) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        load_spec(text=text)
    errors: list[FieldError] = caught.value.errors
    return {e.path: e.message for e in errors}


def test_a_spec_boolean_given_a_word_or_a_number_is_refused() -> None:
    errors = spec_errors(
        "name: loose\nretry: {jitter: 1}\nprompt_assembly: 'no'\nsheets: [{prompt: x}]\n"
    )
    assert errors == {
        "retry.jitter": "must be true or false (got 1)",
        "prompt_assembly": 'must be true or false (got "no")',
    }
    loaded = load_spec(text="name: ok\nretry: {jitter: off}\nsheets: [{prompt: x}]\n")
    assert loaded.spec.retry.jitter is False


# --- 3. a JSON answer past the structured-output limit --------------------------------------


@pytest.fixture
async def json_conductor(
    home: Path, make_config: Callable[..., PodiumConfig], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Conductor]:
    monkeypatch.setattr(runner, "STRUCTURED_OUTPUT_BYTES", 64 * 1024)
    write_profiles(
        home,
        **{
            "json-cli": profile_yaml(
                "json-cli", output={"format": "json", "result_path": "result"}
            ),
            "jsonl-cli": profile_yaml(
                "jsonl-cli",
                output={"format": "jsonl", "result_path": {"path": "text", "where": {"t": "a"}}},
            ),
            "err-cli": profile_yaml("err-cli", output={"format": "json", "error_path": "is_error"}),
            "err-result-cli": profile_yaml(
                "err-result-cli",
                output={"format": "json", "result_path": "result", "error_path": "is_error"},
            ),
            "err-event-cli": profile_yaml(
                "err-event-cli",
                output={
                    "format": "jsonl",
                    "error_path": {"path": "error", "where": {"type": "error"}},
                },
            ),
            "err-stream-cli": profile_yaml(
                "err-stream-cli",
                output={
                    "format": "jsonl",
                    "error_path": {"path": "is_error", "where": {"type": "result"}},
                },
            ),
        },
    )
    c = Conductor(make_config())
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


def print_json(script: Path, *documents: Any) -> str:
    script.write_text("\n".join(json.dumps(d) for d in documents) + "\n")
    return f"cat {script}"


async def test_a_json_answer_past_the_limit_fails_the_run_saying_how_big(
    json_conductor: Conductor, tmp_path: Path
) -> None:
    c = json_conductor
    big = {"result": "x" * 100_000}
    job = await c.submit_job(
        spec=one_sheet("big", "json-cli", print_json(tmp_path / "big.json", big))
    )
    done = await wait_for_job(c, job.job_id)
    (sheet,) = done.sheets
    assert sheet.error_category is ErrorCategory.VALIDATION_FAILED
    size = len(json.dumps(big)) + 1
    (attempt,) = (await c.get_execution_history(job.job_id))[0]
    (check,) = attempt.validations
    assert check.type == "structured_output" and not check.passed
    detail = check.detail or ""
    assert f"{size} bytes" in detail and "65536" in detail, detail
    assert "output.result_path" in detail, detail
    assert detail in (sheet.last_error or ""), sheet.last_error


async def test_a_stream_whose_answer_is_in_the_tail_is_read_however_long(
    json_conductor: Conductor, tmp_path: Path
) -> None:
    c = json_conductor
    events = [{"t": "noise", "text": "y" * 1000} for _ in range(200)] + [{"t": "a", "text": "ok"}]
    job = await c.submit_job(
        spec=one_sheet("long", "jsonl-cli", print_json(tmp_path / "long.jsonl", *events))
    )
    done = await wait_for_job(c, job.job_id)
    assert done.status is JobStatus.COMPLETED
    assert done.sheets[0].output_tail == "ok"


async def test_a_stream_answer_event_past_the_limit_is_reported(
    json_conductor: Conductor, tmp_path: Path
) -> None:
    c = json_conductor
    events = [{"t": "a", "text": "z" * 100_000}]
    job = await c.submit_job(
        spec=one_sheet("huge", "jsonl-cli", print_json(tmp_path / "huge.jsonl", *events))
    )
    done = await wait_for_job(c, job.job_id)
    (sheet,) = done.sheets
    assert sheet.error_category is ErrorCategory.VALIDATION_FAILED
    assert "structured_output:" in (sheet.last_error or ""), sheet.last_error


@pytest.mark.parametrize(
    ("instrument", "paths"),
    [
        ("err-cli", "output.error_path"),
        ("err-result-cli", "output.result_path, output.error_path"),
        ("err-stream-cli", "output.error_path"),
    ],
)
async def test_an_error_flag_past_the_limit_fails_the_run_saying_how_big(
    json_conductor: Conductor, tmp_path: Path, instrument: str, paths: str
) -> None:
    """A CLI that exits 0 but says `is_error: true` in a document (or a stream's only event)
    too large to read: whether it reported an error cannot be told, so the run does not pass
    for a success."""
    c = json_conductor
    big = {"type": "result", "is_error": True, "result": "x" * 100_000}
    job = await c.submit_job(
        spec=one_sheet("flag", instrument, print_json(tmp_path / "flag.json", big))
    )
    done = await wait_for_job(c, job.job_id)
    (sheet,) = done.sheets
    assert sheet.status is SheetStatus.FAILED
    assert sheet.error_category is ErrorCategory.VALIDATION_FAILED
    size = len(json.dumps(big)) + 1
    (attempt,) = (await c.get_execution_history(job.job_id))[0]
    (check,) = attempt.validations
    assert check.type == "structured_output" and not check.passed
    detail = check.detail or ""
    assert detail.startswith(f"{paths}: "), detail
    assert f"{size} bytes" in detail and "65536" in detail, detail
    assert detail in (sheet.last_error or ""), sheet.last_error


@pytest.mark.parametrize(
    ("instrument", "flagged"),
    [("err-stream-cli", False), ("err-stream-cli", True), ("err-event-cli", False)],
    ids=["no-error", "error", "no-error-event"],
)
async def test_a_stream_whose_error_flag_is_in_the_tail_is_read_however_long(
    json_conductor: Conductor, tmp_path: Path, instrument: str, flagged: bool
) -> None:
    """A stream's last events are read: its flag there counts, and a CLI that prints an
    error event only when there is one (opencode) has reported none when its kept end holds
    events but no error."""
    c = json_conductor
    events = [{"type": "noise", "text": "y" * 1000} for _ in range(200)]
    events.append({"type": "result", "is_error": flagged})
    job = await c.submit_job(
        spec=one_sheet("tail", instrument, print_json(tmp_path / "tail.jsonl", *events))
    )
    done = await wait_for_job(c, job.job_id)
    (sheet,) = done.sheets
    if flagged:
        assert sheet.error_category is ErrorCategory.FAILED
        assert "reported an error (output.error_path)" in (sheet.last_error or "")
    else:
        assert done.status is JobStatus.COMPLETED
