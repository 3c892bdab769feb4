"""Jinja2 expressions between nodes, in a sandbox, within bounds.

A string that is exactly one ``{{ expression }}`` keeps the expression's value (a list
stays a list); any other string with ``{{ }}`` renders to text. Templates see the run's
inputs and the outputs of finished nodes, by name. The sandbox refuses attribute access
that reaches Python internals (``__class__``, ``mro`` …), and undefined names are errors,
not empty strings. Rendering goes through a ``Sandbox`` (bot/sandbox.py): bounded in time,
memory and output, and away from the event loop unless provably cheap; a broken bound
raises ``LimitExceeded`` with the sentence to show.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from jinja2 import nodes

from bot import templating
from bot.errors import BadTemplate
from bot.sandbox import Sandbox
from bot.templating import ENV
from workflows.errors import ExpressionError

__all__ = ["ENV", "evaluate", "is_template", "names_used", "parse", "render", "unsafe_attributes"]

T = TypeVar("T")
_WHOLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.S)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


async def render(value: Any, variables: Mapping[str, Any], sandbox: Sandbox) -> Any:
    """Render every template inside ``value`` (strings, lists, mappings), keeping the rest."""
    if isinstance(value, str):
        return await _render_string(value, variables, sandbox) if is_template(value) else value
    if isinstance(value, list):
        return [await render(item, variables, sandbox) for item in value]
    if isinstance(value, dict):
        return {key: await render(item, variables, sandbox) for key, item in value.items()}
    return value


async def evaluate(expression: str, variables: Mapping[str, Any], sandbox: Sandbox) -> Any:
    """The value of a bare expression (``score > 3``), or of a ``{{ }}`` template."""
    match = _WHOLE.match(expression)
    source = match.group("expr") if match else expression
    try:
        return await sandbox.evaluate(source, variables)
    except BadTemplate as exc:
        raise ExpressionError(expression, exc.text) from exc


async def _render_string(template: str, variables: Mapping[str, Any], sandbox: Sandbox) -> Any:
    if _WHOLE.match(template):
        return await evaluate(template, variables, sandbox)
    try:
        return await sandbox.render(template, variables)
    except BadTemplate as exc:
        raise ExpressionError(template, exc.text) from exc


def names_used(value: Any) -> set[str]:
    """The top-level names the templates inside ``value`` read (for validation)."""
    if isinstance(value, str):
        if not is_template(value):
            return set()
        return _checked(value, lambda: templating.undeclared(parse(value)))
    if isinstance(value, list):
        return set().union(*(names_used(item) for item in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(names_used(item) for item in value.values())) if value else set()
    return set()


def parse(template: str) -> nodes.Template:
    return _checked(template, lambda: templating.parse("text", template))


def _checked(template: str, work: Callable[[], T]) -> T:
    try:
        return work()
    except BadTemplate as exc:
        raise ExpressionError(template, exc.text) from exc


def unsafe_attributes(value: Any) -> set[str]:
    """Attribute names a template reaches for that the sandbox will refuse (``__class__``)."""
    found: set[str] = set()
    for template in _strings(value):
        if is_template(template):
            tree = parse(template)
            found |= {
                node.attr
                for node in tree.find_all(nodes.Getattr)
                if node.attr.startswith("_") or node.attr in ("mro", "func_globals", "gi_frame")
            }
            found |= {
                str(node.arg.value)
                for node in tree.find_all(nodes.Getitem)
                if isinstance(node.arg, nodes.Const) and str(node.arg.value).startswith("_")
            }
            found |= {
                str(node.args[0].value)
                for node in tree.find_all(nodes.Filter)
                if node.name == "attr"
                and node.args
                and isinstance(node.args[0], nodes.Const)
                and _unsafe(str(node.args[0].value))
            }
    return found


def _unsafe(name: str) -> bool:
    return name.startswith("_") or name in ("mro", "func_globals", "gi_frame")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    return []
