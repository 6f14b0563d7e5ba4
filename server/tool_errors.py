"""One error mapping for every tool: whatever a tool raises becomes a readable tool error
naming the tool (the SDK shows a bare "Error executing tool X" for anything but ToolError)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError

from podium.core.errors import PodiumError


def mapped_errors(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """The tool with every exception mapped to a readable tool error (the SDK shows a bare
    "Error executing tool X" for anything else)."""

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except ToolError:
            raise
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc
        except RecursionError as exc:
            raise ToolError(f"{name}: the input is nested too deep") from exc
        except OverflowError as exc:
            raise ToolError(f"{name}: a number is too large ({exc})") from exc
        except (ValueError, TypeError, UnicodeError) as exc:
            raise ToolError(f"{name}: {exc}") from exc
        except OSError as exc:
            raise ToolError(f"{name}: {exc.strerror or exc}") from exc

    return call
