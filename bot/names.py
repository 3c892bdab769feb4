"""Names people give things (personas, workflows, actions): safe in commands and paths."""

from __future__ import annotations

import re

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
RULE = "use lowercase letters, digits, '-' or '_', starting with a letter"


def check_name(value: str) -> str:
    if not NAME.match(value):
        raise ValueError(RULE)
    return value
