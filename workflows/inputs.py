"""A run's inputs: defaults filled in, `key=value` text turned into the declared types."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from workflows.errors import InputsRefused, WorkflowError
from workflows.spec import InputSpec, WorkflowSpec

_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "list": list,
    "object": dict,
}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


REST = "\x00rest"  # words that are not key=value: free text for the first input left open


def parse_pairs(words: list[str]) -> dict[str, str]:
    """``["lang=de", "good", "morning"]`` → {"lang": "de", REST: "good morning"}."""
    pairs: dict[str, str] = {}
    rest = []
    for word in words:
        key, sep, value = word.partition("=")
        if sep and key.isidentifier():
            pairs[key] = value
        else:
            rest.append(word)
    if rest:
        pairs[REST] = " ".join(rest)
    return pairs


def resolve(spec: WorkflowSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs a run gets, or a WorkflowError naming every problem at once."""
    given = _place_rest(spec, given)
    unknown = sorted(set(given) - set(spec.inputs))
    problems = [f"unknown input '{name}'" for name in unknown]
    missing: list[str] = []
    values: dict[str, Any] = {}
    for name, declared in spec.inputs.items():
        if name in given:
            try:
                values[name] = coerce(declared, given[name])
            except ValueError as exc:
                problems.append(f"input '{name}': {exc}")
        elif declared.is_required:
            problems.append(f"missing input '{name}' ({declared.description or declared.type})")
            missing.append(name)
        else:
            values[name] = declared.default
    if problems:
        usage = " ".join(f"{n}=…" for n in spec.inputs) or "(no inputs)"
        raise InputsRefused(f"{'; '.join(problems)}. {spec.name} takes: {usage}", tuple(missing))
    return values


def _place_rest(spec: WorkflowSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """Free text goes to the first declared input not given by name (``/translate hola``)."""
    placed = dict(given)
    if REST not in placed:
        return placed
    rest = placed.pop(REST)
    open_inputs = [name for name in spec.inputs if name not in placed]
    if not open_inputs:
        raise WorkflowError(
            f"'{rest}' is not key=value, and {spec.name} has no input left to take it"
        )
    placed[open_inputs[0]] = rest
    return placed


def coerce(declared: InputSpec, value: Any) -> Any:
    """``value`` as the declared type; text from a command line is converted."""
    kind = declared.type
    if isinstance(value, str) and kind != "string":
        value = _from_text(kind, value)
    expected = _TYPES[kind]
    if not isinstance(value, expected) or (
        kind in ("integer", "number") and isinstance(value, bool)
    ):
        raise ValueError(f"expected {kind}, got {value!r}")
    return value


def _from_text(kind: str, text: str) -> Any:
    if kind == "integer":
        return _number(text, int)
    if kind == "number":
        return _number(text, float)
    if kind == "boolean":
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValueError(f"expected yes or no, got {text!r}")
    try:
        return json.loads(text)
    except ValueError:
        return [part.strip() for part in text.split(",")] if kind == "list" else text


def _number(text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(
            f"expected {'integer' if kind is int else 'number'}, got {text!r}"
        ) from None
