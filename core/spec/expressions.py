"""Jinja expressions (`skip_when`): parsed and evaluated in the same sandbox as templates,
so an expression can reach nothing a template cannot, and huge powers or repetitions fail
fast. An expression has no statements, so it cannot loop; its length is bounded by the
spec model."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.parser import Parser

from podium.core.spec.sandbox import RENDER_SECONDS, render_budget
from podium.core.spec.templating import (
    TemplateRenderError,
    assigned_or_guarded,
    compile_template,
    environment,
    render_error,
)


@lru_cache(maxsize=1024)
def _parse(source: str) -> nodes.Expr:
    try:
        parser = Parser(environment, source, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            token = parser.stream.current
            raise TemplateSyntaxError(
                f"unexpected {token.value!r} after the expression", token.lineno
            )
        return expr
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(
            f"expression syntax error: {exc.message}", kind="syntax", line=exc.lineno
        ) from None


def undefined_in_expression(source: str, known: frozenset[str] | set[str]) -> list[str]:
    """Names the expression reads that neither `known` nor Jinja provides (syntax errors
    raise `TemplateRenderError`)."""
    expr = _parse(source)
    names = {node.name for node in expr.find_all(nodes.Name)} - assigned_or_guarded(expr)
    return sorted(n for n in names if n not in known and n not in environment.globals)


def evaluate(source: str, values: Mapping[str, Any]) -> bool:
    """The expression's truth with `values` as its names, rendered the way templates are
    (the same sandbox, value bounds and time budget)."""
    _parse(source)  # our own syntax message first; then it is known to be one expression
    template = compile_template("{% if " + source + " %}1{% endif %}")
    try:
        with render_budget(RENDER_SECONDS):
            return template.render(values) == "1"
    except Exception as exc:  # anything the expression raises is the spec's fault
        raise render_error(exc, lines=False) from None
