"""Trap 14, templates: a template bomb is refused fast, at validate/submit and at render,
naming the limit it hit, and no other client waits meanwhile (issue 10, item 2)."""

from __future__ import annotations

import time

import pytest
from helpers import wait_for_job
from hostile import PROBES, probe_rounds, served

from podium.core.conductor import Conductor
from podium.core.spec.templating import TemplateContext, TemplateRenderError, render

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

CTX = TemplateContext(
    workspace="/w", job_id="j", sheet_num=1, total_sheets=1, sheet_name=None,
    start_item=None, end_item=None, variables={"s": "abc"}, outputs={},
)  # fmt: skip

BOMBS = {
    "{{ (9**4096)**4096 }}": "bits",
    "{{ 2 ** (10 ** 9) }}": "bits",
    "{% set n = namespace(v=3) %}{% for i in range(40) %}{% set n.v = n.v * n.v %}"
    "{% endfor %}{{ n.v }}": "bits",
    "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}": "budget",
    "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}"
    "{{ f(60) }}": "budget",
    "{% set n = namespace(s='x') %}{% for i in range(40) %}{% set n.s = n.s ~ n.s %}"
    "{% endfor %}": "1000000 characters",
    "{% set n = namespace(s='x') %}{% for i in range(40) %}{% set n.s = n.s + n.s %}"
    "{% endfor %}": "1000000 items",
    "{{ 'x' | center(10**9) }}": "exceeds 1000000",
    "{{ 'x'.ljust(10**9) }}": "exceeds 1000000",
    "{{ ('a' * 999999).replace('a', 'aaaa') }}": "1000000 characters",
    "{{ '%0999999999d' % 1 }}": "width",
    "{{ '{:>999999999}'.format(1) }}": "width",
    "{{ '%0999999999d' | format(1) }}": "width",
    "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}": "4194304 characters",
    # A global, not a method or a filter: it built a million paragraphs (a minute) unchecked.
    "{{ lipsum(1000000) }}": "1000000 characters",
    "{{ lipsum(10**7) }}": "exceeds 1000000",
    "{{ lipsum(1, max=10**6) }}": "10000 words",
}


@pytest.mark.parametrize("template", list(BOMBS))
def test_a_bomb_stops_fast_naming_its_limit(template: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(TemplateRenderError) as caught:
        render(template, CTX)
    assert time.monotonic() - t0 < 1.0
    assert BOMBS[template] in str(caught.value), caught.value
    assert caught.value.kind == "security"


def test_ordinary_templates_still_render() -> None:
    source = "{{ 'a' ~ s ~ 'b' }} {{ s | upper }} {{ [1, 2] | join(',') }} {{ 9**4096 % 7 }}"
    assert render(source, CTX) == f"aabcb ABC 1,2 {9**4096 % 7}"
    assert render("{% for i in range(3) %}{{ i }}{% endfor %}", CTX) == "012"
    assert render("{{ '%05d' % 42 }} {{ '{:>4}'.format(1) }}", CTX) == "00042    1"
    assert render("{{ lipsum(3) }}", CTX).count("<p>") == 3
    plain = render("{{ lipsum(2, html=False, min=5, max=6) }}", CTX).split("\n\n")
    assert len(plain) == 2 and all(len(p.split()) == 5 and "<" not in p for p in plain)


async def test_validate_and_submit_refuse_every_bomb_naming_the_field(
    conductor: Conductor,
) -> None:
    async with served(conductor) as s:
        for template in BOMBS:
            spec = {"name": "bomb", "sheets": [{"prompt": template}]}
            t0 = time.monotonic()
            report = await s.ok("validate_spec", {"spec": spec})
            assert time.monotonic() - t0 < 2
            assert not report["valid"]
            assert report["errors"][0]["path"] == "sheets.0.prompt", report
            submitted = await s.call("submit_job", {"spec": spec})
            assert submitted.is_error
            assert "sheets.0.prompt" in submitted.content[0].text  # type: ignore[union-attr]
        assert (await conductor.list_jobs())[0] == []


DEEP = {
    "parentheses": "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
    "if blocks": "{% if 1 %}" * 3000 + "x" + "{% endif %}" * 3000,
}


@pytest.mark.parametrize("template", list(DEEP.values()), ids=list(DEEP))
async def test_a_template_nested_too_deep_is_refused_at_its_field(
    conductor: Conductor, template: str
) -> None:
    """Jinja recurses per level: the RecursionError reached the tool's last-resort mapping,
    "validate_spec: the input is nested too deep", naming no field and no report."""
    sheet = {"prompt": "echo", "validations": [{"type": "command_succeeds", "command": template}]}
    async with served(conductor) as s:
        report = await s.ok("validate_spec", {"spec": {"name": "deep", "sheets": [sheet]}})
        assert not report["valid"]
        [error] = report["errors"]
        assert error["path"] == "sheets.0.validations.0.command", error
        assert "nested too deeply" in error["message"], error


async def test_a_bomb_that_only_goes_off_at_run_time_fails_its_sheet(
    conductor: Conductor,
) -> None:
    # At submit the outputs are empty placeholders; at run time sheet 1 printed 4 KiB, and
    # three nested loops over it would take years.
    loops = "{% for a in outputs[1] %}{% for b in outputs[1] %}{% for c in outputs[1] %}"
    spec = {
        "name": "late-bomb",
        "retry": {"max_retries": 0},
        "sheets": [
            {"prompt": "head -c 4096 /dev/zero | tr '\\\\0' x"},
            {"depends_on": [1], "prompt": loops + "{% endfor %}{% endfor %}{% endfor %}echo"},
        ],
    }
    job = await conductor.submit_job(spec=spec)
    t0 = time.monotonic()
    detail = await wait_for_job(conductor, job.job_id, timeout=20)
    assert time.monotonic() - t0 < 10
    assert detail.status.value == "failed"
    assert "budget" in (detail.sheets[1].last_error or ""), detail.sheets[1]


async def test_bombs_in_a_loop_leave_other_clients_answered(conductor: Conductor) -> None:
    async with served(conductor) as s:

        async def one_round() -> None:
            for template in BOMBS:
                await s.ok(
                    "validate_spec", {"spec": {"name": "b", "sheets": [{"prompt": template}]}}
                )

        latencies, rounds = await probe_rounds(s, one_round)
    assert not latencies.errors
    assert latencies.p99() < 0.25, (rounds, sorted(latencies.seconds)[-5:])
    assert len(latencies.seconds) >= PROBES, rounds


FILE_TAGS = {
    "{% include 'part.j2' %}": "include",
    "x {{ workspace }}\n{% extends 'base.j2' %}": "extends",
    "{% import 'macros.j2' as m %}{{ m.f() }}": "import",
    "{% from 'macros.j2' import f %}{{ workspace }}": "from ... import",
}


@pytest.mark.parametrize("template", list(FILE_TAGS))
async def test_a_template_that_reads_other_template_files_is_refused_at_validate(
    conductor: Conductor, template: str
) -> None:
    """Podium templates are one text with no template files beside them: `include`,
    `extends` and `import` can only fail, at every attempt, so a spec using them is refused
    at validate (naming the field, the tag and its line) instead of at run time."""
    async with served(conductor) as s:
        spec = {"name": "parts", "sheets": [{"prompt": "true"}, {"prompt": template}]}
        report = await s.ok("validate_spec", {"spec": spec})
        assert not report["valid"], report
        [error] = report["errors"]
        assert error["path"] == "sheets.1.prompt", report
        assert f"{{% {FILE_TAGS[template]} %}}" in error["message"], error
        assert "no template files" in error["message"], error
        assert "line " in error["message"], error
