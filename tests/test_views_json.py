"""Rows turned straight into their views' JSON (`view_json`) give exactly what building the
pydantic view and dumping it gives, for any values a row can hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podium.core.models import JobStatus, JobSummary, PauseReason
from podium.core.store.rows import JobRow, view_json

texts = st.text(max_size=20)
times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
)
# A time read back in another zone is still written in UTC with a `Z`.
zoned = st.builds(
    lambda t, hours: t.astimezone(timezone(timedelta(hours=hours))),
    times,
    st.integers(min_value=-12, max_value=12),
)
rows = st.builds(
    JobRow,
    job_id=texts,
    name=texts,
    status=st.sampled_from(JobStatus),
    workspace=texts,
    spec_fingerprint=texts,
    total_sheets=st.integers(min_value=0, max_value=10_000),
    submitted_at=times | zoned,
    updated_at=times,
    pause_reason=st.none() | st.sampled_from(PauseReason),
    error=st.none() | texts,
    labels=st.lists(texts, max_size=4),
    completed_sheets=st.integers(min_value=0, max_value=10_000),
    failed_sheets=st.integers(min_value=0, max_value=10_000),
    started_at=st.none() | times,
    completed_at=st.none() | times | zoned,
)


@settings(max_examples=300, deadline=None)
@given(rows)
def test_a_summary_as_json_is_the_models_dump(row: JobRow) -> None:
    assert row.summary_json() == row.summary().model_dump(mode="json")


def test_a_model_field_the_row_lacks_is_an_error_not_a_gap() -> None:
    class Wider(JobSummary):
        not_on_the_row: int = 0

    row = JobRow("j", "n", JobStatus.QUEUED, "/w", "fp", 0, datetime.now(UTC), datetime.now(UTC))
    with pytest.raises(TypeError, match="not_on_the_row"):
        view_json(Wider, row)
