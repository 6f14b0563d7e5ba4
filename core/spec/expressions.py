"""Jinja expressions (`skip_when`): parsed and evaluated in the same sandbox as templates,
so an expression can reach nothing a template cannot, and huge powers or repetitions fail
fast. An expression has no statements, so it cannot loop; its length is bounded by the
spec model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
    guarded,
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


@dataclass(frozen=True)
class ConstantRead:
    key: object
    by_attribute: bool  # `outputs.plan` rather than `outputs['plan']`
    # The expression tests whether the key is there, somewhere: `x.k is defined`,
    # `x.k | default(...)`, `'k' in x`, `x.get('k')`. Its other reads of the key may be
    # behind that test (`'k' in x and x.k.status`), which only evaluating it can tell.
    guarded: bool


def constant_reads(source: str, name: str) -> list[ConstantRead]:
    """The keys the expression reads of `name` by a constant (`outputs[1]`, `outputs['plan']`,
    `outputs.plan`), in whichever branch: a check at submit sees them all, where an
    evaluation with placeholder values would stop at the first `and` that is false. A key
    built from other values (`sheets['phase-' ~ stage]`) is known only when evaluated."""
    expr = _parse(source)
    found: list[tuple[object, bool, int]] = []  # (key, by attribute, node id)
    # find_all yields descendants only; the whole expression can be the read (`sheets.x`).
    for node in [expr, *expr.find_all((nodes.Getitem, nodes.Getattr))]:
        target = getattr(node, "node", None)
        if not isinstance(target, nodes.Name) or target.name != name:
            continue
        if isinstance(node, nodes.Getattr):
            found.append((node.attr, True, id(node)))
        elif isinstance(node, nodes.Getitem):
            key = _constant(node.arg)
            if key is not _NOT_CONSTANT:
                found.append((key, False, id(node)))
    behind_guard = {id(node) for node in guarded(expr)}
    tested = {key for key, _, at in found if at in behind_guard} | _tested_keys(expr, name)
    # A literal's value (a string, number, boolean or none) can be a set member.
    return [ConstantRead(key, by_attr, key in tested) for key, by_attr, _ in found]


def _tested_keys(expr: nodes.Expr, name: str) -> set[object]:
    """Keys whose presence in `name` the expression tests: `'k' in x`, `'k' not in x`,
    `x.get('k')`."""
    keys: set[object] = set()
    for node in [expr, *expr.find_all((nodes.Compare, nodes.Call))]:
        if isinstance(node, nodes.Compare) and isinstance(node.expr, nodes.Const):
            for operand in node.ops:
                target = operand.expr
                if (
                    operand.op in ("in", "notin")
                    and isinstance(target, nodes.Name)
                    and target.name == name
                ):
                    keys.add(node.expr.value)
        elif isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
            method = node.node
            if (
                method.attr == "get"
                and isinstance(method.node, nodes.Name)
                and method.node.name == name
                and node.args
                and isinstance(node.args[0], nodes.Const)
            ):
                keys.add(node.args[0].value)
    return keys


_NOT_CONSTANT = object()


def _constant(node: nodes.Node) -> object:
    """The value of a literal key, a negative number included (`-1` is `Neg(Const(1))`);
    nothing else is computed here, outside the sandbox's bounds."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.Neg) and isinstance(node.node, nodes.Const):
        value = node.node.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value
    return _NOT_CONSTANT


def constant_keys(source: str, name: str) -> list[tuple[object, bool]]:
    """(key, by attribute) of every constant read of `name` (see `constant_reads`)."""
    return [(read.key, read.by_attribute) for read in constant_reads(source, name)]


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
