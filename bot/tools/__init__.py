"""Tools: what personas and workflows can do beyond talking, each call audited.

``catalog()`` is every tool Switchboard ships; an installation's ``Core.tools`` starts from
it. A persona names the tools it may use (``tools:`` in its file); a workflow calls one from
a ``tool`` node.
"""

from __future__ import annotations

import functools

from bot.tools.base import Tool, ToolContext, ToolError, ToolParams, ToolResult
from bot.tools.registry import ToolRegistry

__all__ = [
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolParams",
    "ToolRegistry",
    "ToolResult",
    "catalog",
]


@functools.cache
def catalog() -> ToolRegistry:
    from bot.tools.calc import Calculate
    from bot.tools.clock import CurrentTime
    from bot.tools.web import ReadWebpage

    return ToolRegistry([CurrentTime(), Calculate(), ReadWebpage()])
