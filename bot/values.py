"""Values as Switchboard stores and shows them: JSON-able copies, and validation errors as
one line a person can act on."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


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
