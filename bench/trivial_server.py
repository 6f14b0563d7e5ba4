"""The floor for tool latency: a bare MCPServer over stdio with one trivial tool."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations
from pydantic import BaseModel

mcp: MCPServer[None] = MCPServer("trivial")


class Echo(BaseModel):
    value: int


@mcp.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
async def echo(value: int = 0) -> Echo:
    """Return the value given."""
    return Echo(value=value)


if __name__ == "__main__":
    mcp.run("stdio")
