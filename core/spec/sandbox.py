"""The sandbox that templates render in, bounded in time and in the size of every value.

Templates come from specs, which come from agents, and they render inside the conductor (at
submit to check them, at dispatch for real). Jinja's sandbox stops them reaching Python
internals, not from computing: `{{ (9**4096)**4096 }}` is one multiplication of huge integers
that holds the GIL for seconds, `{% for a in range(99999) %}{% for b in range(99999) %}` runs
for hours, `~` doubles a string until memory runs out. So here:

- every arithmetic result, concatenation, method call and filter argument is bounded before
  it is computed (integers to MAX_INT_BITS, strings and lists to MAX_VALUE_LENGTH), so no
  single operation runs long;
- every loop iteration, call and operation charges a budget, and a render that runs past its
  deadline stops with an error naming the limit;
- the rendered text is capped at MAX_OUTPUT_CHARS.
"""

from __future__ import annotations

import builtins
import functools
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum
from jinja2.visitor import NodeTransformer
from markupsafe import Markup, escape

MAX_INT_BITS = 65_536  # about 20,000 decimal digits: arithmetic on them takes microseconds
MAX_VALUE_LENGTH = 1_000_000  # characters of a string, items of a list
MAX_OUTPUT_CHARS = 4 * 1024 * 1024  # of one rendered template
# Wall-clock budget of one render, at submit and at dispatch alike (so a template that passes
# the check cannot fail at run time for taking longer); real templates take microseconds.
RENDER_SECONDS = 0.25

# A format width or precision this long would make a huge string: '%0999999999d' % 1.
_HUGE_FORMAT_WIDTH = re.compile(r"\d{7,}|%[^a-zA-Z%]*\*")
# Words in one `lipsum` paragraph: one paragraph is built without a tick, so its size is
# what bounds its time (10,000 words take milliseconds).
MAX_LIPSUM_WORDS = 10_000
_TICKING_FILTER = "_podium_ticking"
_CONCAT_FILTER = "_podium_concat"


class BudgetExceeded(SecurityError):
    """A template ran past a time or size budget."""


class _Clock(threading.local):
    deadline: float | None = None
    limit: float = RENDER_SECONDS


_clock = _Clock()


@contextmanager
def render_budget(seconds: float = RENDER_SECONDS) -> Iterator[None]:
    """Bound the renders inside the block (in this thread) to `seconds` each."""
    previous = _clock.deadline, _clock.limit
    _clock.deadline, _clock.limit = time.monotonic() + seconds, seconds
    try:
        yield
    finally:
        _clock.deadline, _clock.limit = previous


def tick() -> None:
    deadline = _clock.deadline
    if deadline is not None and time.monotonic() > deadline:
        raise BudgetExceeded(
            f"the template ran past its {_clock.limit:g} s budget (a loop or recursion too big?)"
        )


def _check_length(value: Any, what: str) -> None:
    if isinstance(value, str | list | tuple | bytes) and len(value) > MAX_VALUE_LENGTH:
        raise BudgetExceeded(f"{what} would exceed {MAX_VALUE_LENGTH} characters or items")


def _check_int_arg(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_VALUE_LENGTH:
        raise BudgetExceeded(f"{what}: {value} exceeds {MAX_VALUE_LENGTH}")


def _int_bits(value: Any) -> int:
    return abs(value).bit_length() if isinstance(value, int) else 0


def _check_binop(operator: str, left: Any, right: Any) -> None:
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and ints and abs(left) > 1 and right > 0:
        if _int_bits(left) * right > MAX_INT_BITS:
            raise BudgetExceeded(
                f"{left.bit_length()}-bit ** {right} would exceed {MAX_INT_BITS} bits"
            )
    elif operator == "*":
        if ints and _int_bits(left) + _int_bits(right) > MAX_INT_BITS:
            raise BudgetExceeded(f"the product would exceed {MAX_INT_BITS} bits")
        for seq, count in ((left, right), (right, left)):
            repeated = isinstance(seq, str | list | tuple) and isinstance(count, int)
            if repeated and len(seq) * count > MAX_VALUE_LENGTH:
                raise BudgetExceeded(
                    f"repeating a sequence {count} times exceeds {MAX_VALUE_LENGTH} items"
                )
    elif operator == "+":
        sequences = isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple)
        if sequences and len(left) + len(right) > MAX_VALUE_LENGTH:
            raise BudgetExceeded(f"the sum would exceed {MAX_VALUE_LENGTH} items")
    elif operator == "%" and isinstance(left, str) and _HUGE_FORMAT_WIDTH.search(left):
        raise BudgetExceeded("a %-format width or precision that large is not allowed")


def _check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # The sandbox hands out str.format wrapped; the bound method is behind __wrapped__.
    bound = getattr(obj, "__wrapped__", obj)
    owner = getattr(bound, "__self__", None)
    name = getattr(bound, "__name__", "")
    if isinstance(owner, str | list | tuple | dict):
        for value in (*args, *kwargs.values()):
            _check_int_arg(value, f"{name}() argument")
    if isinstance(owner, str):
        if name == "replace" and len(args) >= 2:
            old, new = str(args[0]), str(args[1])
            grows = max(0, len(new) - len(old))
            count = owner.count(old) if old else len(owner) + 1
            if len(owner) + count * grows > MAX_VALUE_LENGTH:
                raise BudgetExceeded(f"replace() would exceed {MAX_VALUE_LENGTH} characters")
        if name in ("format", "format_map") and _HUGE_FORMAT_WIDTH.search(owner):
            raise BudgetExceeded("a format width or precision that large is not allowed")
        if name == "join" and args and isinstance(args[0], list | tuple):
            total = sum(len(x) for x in args[0] if isinstance(x, str))
            if total + len(owner) * len(args[0]) > MAX_VALUE_LENGTH:
                raise BudgetExceeded(f"join() would exceed {MAX_VALUE_LENGTH} characters")


def _ticking(iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        tick()
        yield item


def _concat(parts: list[Any]) -> str:
    tick()
    texts = [str(p) for p in parts]
    if sum(len(t) for t in texts) > MAX_VALUE_LENGTH:
        raise BudgetExceeded(f"the concatenation would exceed {MAX_VALUE_LENGTH} characters")
    return "".join(texts)


def guard_filter(func: Callable[..., Any]) -> Callable[..., Any]:
    """The filter with its arguments bounded (`center(10**9)` would allocate a gigabyte) and
    its result checked."""

    @functools.wraps(func)  # keeps jinja_pass_arg (pass_context and friends)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        tick()
        # The first argument (after any context) is the value filtered; the rest are options.
        for value in (*args[1:], *kwargs.values()):
            _check_int_arg(value, f"filter {func.__name__} argument")
        if func.__name__ == "do_format" and any(
            isinstance(a, str) and _HUGE_FORMAT_WIDTH.search(a) for a in args[:2]
        ):
            raise BudgetExceeded("a format width or precision that large is not allowed")
        result = func(*args, **kwargs)
        _check_length(result, f"filter {func.__name__}")
        return result

    return guarded


def bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """Jinja's `lipsum`, a paragraph at a time under the budget: the global is a plain call,
    so `lipsum(1000000)` went past every check (its arguments are not a str's or a list's) and
    built a million paragraphs, a minute of CPU, before its result was measured."""
    for name, value in (("n", n), ("min", min), ("max", max)):
        _check_int_arg(value, f"lipsum() {name}")
    if max > MAX_LIPSUM_WORDS:
        raise BudgetExceeded(f"lipsum() max: {max} exceeds {MAX_LIPSUM_WORDS} words a paragraph")
    # A paragraph of `min` words is at least 2 * min characters (a word and a space each).
    if n * 2 * builtins.max(min, 1) > MAX_VALUE_LENGTH:
        raise BudgetExceeded(f"lipsum() would exceed {MAX_VALUE_LENGTH} characters")
    paragraphs: list[str] = []
    size = 0
    for _ in range(n):
        tick()
        paragraph = generate_lorem_ipsum(1, html=False, min=min, max=max)
        size += len(paragraph) + 2
        if size > MAX_VALUE_LENGTH:
            raise BudgetExceeded(f"lipsum() would exceed {MAX_VALUE_LENGTH} characters")
        paragraphs.append(paragraph)
    if not html:
        return "\n\n".join(paragraphs)
    return Markup("\n".join(f"<p>{escape(p)}</p>" for p in paragraphs))


class _Bounded(NodeTransformer):
    """Every loop's iterable charges the budget per item; every `~` goes through a checked
    concatenation."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _TICKING_FILTER, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        items = nodes.List(list(node.nodes), lineno=node.lineno)
        return nodes.Filter(items, _CONCAT_FILTER, [], [], None, None, lineno=node.lineno)


class BoundedSandbox(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: guard_filter(f) for name, f in self.filters.items()}
        self.filters[_TICKING_FILTER] = _ticking
        self.filters[_CONCAT_FILTER] = _concat
        self.globals["lipsum"] = bounded_lipsum

    def concat(self, parts: Iterable[str]) -> str:
        """Join rendered output, stopping at MAX_OUTPUT_CHARS."""
        out: list[str] = []
        size = 0
        for part in parts:
            size += len(part)
            if size > MAX_OUTPUT_CHARS:
                raise BudgetExceeded(
                    f"the rendered text would exceed {MAX_OUTPUT_CHARS} characters"
                )
            out.append(part)
        return "".join(out)

    def bounded_parse(self, source: str) -> nodes.Template:
        return _Bounded().visit(self.parse(source))  # type: ignore[no-any-return]

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        tick()
        _check_binop(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        _check_length(result, f"the result of {operator}")
        return result

    def call(
        __self,  # Jinja's own signature, so that `self` can be a template keyword argument
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        tick()
        _check_call(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        _check_length(result, f"the result of {getattr(__obj, '__name__', 'a call')}()")
        return result
