"""Jinja2 expressions between nodes, in a sandbox.

A string that is exactly one ``{{ expression }}`` keeps the expression's value (a list
stays a list); any other string with ``{{ }}`` renders to text. Templates see the run's
inputs and the outputs of finished nodes, by name. The sandbox refuses attribute access
that reaches Python internals (``__class__``, ``mro`` …), and undefined names are errors,
not empty strings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from workflows.errors import ExpressionError

_WHOLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.S)

ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def render(value: Any, variables: Mapping[str, Any]) -> Any:
    """Render every template inside ``value`` (strings, lists, mappings), keeping the rest."""
    if isinstance(value, str):
        return _render_string(value, variables) if is_template(value) else value
    if isinstance(value, list):
        return [render(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: render(item, variables) for key, item in value.items()}
    return value


def evaluate(expression: str, variables: Mapping[str, Any]) -> Any:
    """The value of a bare expression (``score > 3``), or of a ``{{ }}`` template."""
    match = _WHOLE.match(expression)
    source = match.group("expr") if match else expression
    try:
        value = ENV.compile_expression(source, undefined_to_none=False)(**variables)
        if isinstance(value, Undefined):
            value._fail_with_undefined_error()  # a missing name, or one the sandbox refused
    except TemplateError as exc:
        raise ExpressionError(expression, _reason(exc)) from exc
    return value


def _render_string(template: str, variables: Mapping[str, Any]) -> Any:
    match = _WHOLE.match(template)
    if match:
        return evaluate(template, variables)
    try:
        return ENV.from_string(template).render(**variables)
    except TemplateError as exc:
        raise ExpressionError(template, _reason(exc)) from exc


def names_used(value: Any) -> set[str]:
    """The top-level names the templates inside ``value`` read (for validation)."""
    if isinstance(value, str):
        if not is_template(value):
            return set()
        return meta.find_undeclared_variables(parse(value))
    if isinstance(value, list):
        return set().union(*(names_used(item) for item in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(names_used(item) for item in value.values())) if value else set()
    return set()


def parse(template: str) -> nodes.Template:
    try:
        return ENV.parse(template)
    except TemplateError as exc:
        raise ExpressionError(template, _reason(exc)) from exc


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


def _reason(exc: TemplateError) -> str:
    return str(exc.message or exc) if hasattr(exc, "message") else str(exc)
