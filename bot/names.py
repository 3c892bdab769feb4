"""Names people give things (personas, workflows, actions): safe in commands and paths."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
RULE = "use lowercase letters, digits, '-' or '_', starting with a letter"


def closest(name: str, known: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The known name nearest to a mistyped one, if any is near enough: "did you mean"."""
    found = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return found[0] if found else None


def check_name(value: str) -> str:
    if not NAME.match(value):
        raise ValueError(RULE)
    return value
