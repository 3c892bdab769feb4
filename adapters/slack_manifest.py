"""The Slack app manifest: everything `api.slack.com/apps` → "From a manifest" needs, so
creating the app is one paste (`switchboard slack manifest`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# What the adapter reads and writes, and nothing more.
BOT_SCOPES = (
    "app_mentions:read",  # @mentions in channels
    "channels:history",  # messages in public channels' threads it is part of
    "groups:history",  # the same in private channels it was invited to
    "im:history",  # direct messages
    "mpim:history",  # group direct messages
    "chat:write",  # replies, status lines, placeholders
    "commands",  # slash commands
    "files:read",  # files people share
    "files:write",  # files it sends
    "users:read",  # display names
)
BOT_EVENTS = ("app_mention", "message.im", "message.channels", "message.groups", "message.mpim")
MAX_COMMANDS = 50  # Slack's limit per app
MAX_DESCRIPTION = 100


@dataclass(frozen=True)
class SlashCommand:
    command: str  # "/digest"
    description: str
    usage_hint: str = ""


def manifest(
    commands: Sequence[SlashCommand], *, name: str = "Switchboard", events_url: str | None = None
) -> dict[str, Any]:
    """Socket Mode when ``events_url`` is None; else every request goes to that URL."""
    return {
        "display_information": {
            "name": name,
            "description": "AI personas and workflows, self-hosted.",
        },
        "features": {
            "app_home": {
                "home_tab_enabled": False,
                "messages_tab_enabled": True,
                "messages_tab_read_only_enabled": False,
            },
            "bot_user": {"display_name": name, "always_online": True},
            "slash_commands": [_command(c, events_url) for c in commands[:MAX_COMMANDS]],
        },
        "oauth_config": {"scopes": {"bot": list(BOT_SCOPES)}},
        "settings": _settings(events_url),
    }


def _command(command: SlashCommand, url: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "command": command.command,
        "description": _clip(command.description or command.command),
        "should_escape": False,
    }
    if command.usage_hint:
        entry["usage_hint"] = _clip(command.usage_hint)
    if url is not None:
        entry["url"] = url
    return entry


def _settings(url: str | None) -> dict[str, Any]:
    events: dict[str, Any] = {"bot_events": list(BOT_EVENTS)}
    interactivity: dict[str, Any] = {"is_enabled": True}
    if url is not None:
        events["request_url"] = url
        interactivity["request_url"] = url
    return {
        "event_subscriptions": events,
        "interactivity": interactivity,
        "org_deploy_enabled": False,
        "socket_mode_enabled": url is None,
        "token_rotation_enabled": False,
    }


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"
