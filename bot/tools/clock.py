"""The current date and time in a time zone: models do not know what day it is."""

from __future__ import annotations

import difflib
import functools
import zoneinfo
from datetime import datetime
from typing import ClassVar

from pydantic import Field

from bot.tools.base import ToolContext, ToolError, ToolParams, ToolResult

# Not strftime("%A"): that follows the process's locale, and models read English best.
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class CurrentTimeParams(ToolParams):
    zone: str = Field(
        default="UTC",
        max_length=64,
        description="An IANA time zone name, such as 'Europe/Berlin' or 'America/New_York'.",
    )


class CurrentTime:
    name: ClassVar[str] = "current_time"
    description: ClassVar[str] = (
        "The current date, time and weekday in a time zone (UTC unless one is given)."
    )
    params: ClassVar[type[ToolParams]] = CurrentTimeParams
    effects: ClassVar[bool] = False
    offline: ClassVar[bool] = True

    async def run(self, ctx: ToolContext, params: CurrentTimeParams) -> ToolResult:
        zone = _zone(params.zone)
        now = datetime.now(zone)
        return ToolResult(
            output={
                "iso": now.isoformat(timespec="seconds"),
                "date": now.strftime("%Y-%m-%d"),
                "time": now.strftime("%H:%M"),
                "weekday": WEEKDAYS[now.weekday()],
                "zone": zone.key,
            }
        )


def _zone(name: str) -> zoneinfo.ZoneInfo:
    """The zone called ``name``, forgiving case ('europe/paris'), which models often get wrong."""
    key = _by_lower().get(name.strip().lower(), name)
    try:
        return zoneinfo.ZoneInfo(key)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = _suggestions(name)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ToolError(
            f"There is no time zone called {name!r}.{hint} "
            "Use an IANA name such as 'Europe/Berlin', 'America/New_York' or 'UTC'."
        ) from None


@functools.cache
def _by_lower() -> dict[str, str]:
    return {key.lower(): key for key in zoneinfo.available_timezones()}


def _suggestions(name: str) -> list[str]:
    """Up to three zones close to ``name``, by the whole name ('Europe/Berln') or the city
    ('Tokio')."""
    wanted = name.strip().lower().replace(" ", "_")

    def closeness(key: str) -> float:
        city = key.rsplit("/", 1)[-1]
        return max(difflib.SequenceMatcher(None, wanted, k).ratio() for k in (key, city))

    scored = sorted(((closeness(key), key) for key in _by_lower()), reverse=True)[:3]
    return [_by_lower()[key] for score, key in scored if score >= 0.7]
