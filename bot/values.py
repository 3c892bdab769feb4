"""Values as Switchboard stores and shows them: JSON-able copies, and validation errors as
one line a person can act on."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


MAX_DEPTH = 100  # levels of nesting a JSON document from outside may have


def read_json(text: str | bytes) -> Any:
    """A JSON document from outside (a web message, a webhook), nested at most ``MAX_DEPTH``
    levels: deeper data would later exhaust the stack of whatever walks it. ``ValueError``
    for anything else, a document too deep for the parser itself included."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None
    if _depth(value) > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
    return value


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects, measured without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                pending.extend((child, level + 1) for child in children)
    return deepest


def jsonable(value: Any) -> Any:
    """A copy that JSON can hold: dates become ISO strings, bytes a size, anything else text."""
    return json.loads(to_json(value))


def to_json(value: Any) -> str:
    """``value`` as JSON text, converted the way ``jsonable`` converts it."""
    return json.dumps(value, default=_fallback, ensure_ascii=False)


def _fallback(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)


def problems(exc: ValidationError, *, whole: str = "") -> str:
    """``field.sub: message; other: message`` (``whole`` names an error about the whole)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or whole}: {err['msg']}" for err in exc.errors()
    )
