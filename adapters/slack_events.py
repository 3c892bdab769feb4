"""Slack's payloads read as Switchboard's messages: pure functions, no SDK, no I/O.

A DM is one conversation; a thread is one conversation (in a channel, the reply to a
mention starts a thread under it). Message ids are qualified with the channel, since
Slack numbers messages (``ts``) per channel: a mention that arrives both as
``app_mention`` and as a ``message`` is one stored message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.messages import Attachment, Author, Button, ConversationRef, IncomingMessage

CHANNEL = "slack"
ACTION_PREFIX = "sb-command-"  # a button's action_id (+ its position): its value is a command
SECTION_LIMIT = 3000  # characters of a section block's text
# Subtypes that are a person's message (anything else: joins, topics, bots, edits, ...).
PEOPLE_SUBTYPES = frozenset({"", "file_share", "thread_broadcast"})
_LEADING_MENTION = re.compile(r"^\s*<@([A-Z0-9]+)(?:\|[^>]*)?>[\s:,]*")


@dataclass(frozen=True)
class SharedFile:
    """A file someone shared: what to download (with the bot token) and what to call it."""

    url: str
    name: str
    content_type: str
    size: int


def qualify(channel: str, ts: str) -> str:
    return f"{channel}:{ts}"


def is_from_bot(event: Mapping[str, Any], bot_user: str) -> bool:
    return (
        bool(event.get("bot_id"))
        or event.get("user") == bot_user
        or (event.get("subtype") == "bot_message")
    )


def conversation(event: Mapping[str, Any], team: str, *, mention: bool) -> ConversationRef:
    """Where the reply goes: the DM (or its thread), the thread the message is in, or a new
    thread under a mention in a channel."""
    channel = str(event["channel"])
    thread = str(event.get("thread_ts") or "")
    if mention and not thread and event.get("channel_type") != "im":
        thread = str(event["ts"])
    return ConversationRef(channel=CHANNEL, workspace=team, chat=channel, thread=thread)


def account(user: str, team: str, installed: str) -> str:
    """A person's account id: the user id, qualified with their workspace when that is not
    the one the bot is installed in (Slack Connect), so access policies can tell them apart."""
    return user if not team or team == installed else f"{team}/{user}"


def message(
    event: Mapping[str, Any], team: str, bot_user: str, attachments: tuple[Attachment, ...]
) -> IncomingMessage:
    """A person's message (DM, mention, or in a thread the bot is part of); ``team`` is the
    workspace the bot is installed in."""
    mention = event.get("type") == "app_mention" or _mentions(event, bot_user)
    home = str(event.get("user_team") or event.get("team") or team)
    return IncomingMessage(
        ref=conversation(event, team, mention=mention),
        external_id=qualify(str(event["channel"]), str(event["ts"])),
        author=Author(account(str(event.get("user", "")), home, team), ""),
        text=strip_mention(str(event.get("text") or ""), bot_user),
        attachments=attachments,
        raw=dict(event),
    )


def strip_mention(text: str, bot_user: str) -> str:
    """The text without the leading ``<@BOT>`` that addressed it."""
    found = _LEADING_MENTION.match(text)
    if found and found.group(1) == bot_user:
        return text[found.end() :]
    return text


def _mentions(event: Mapping[str, Any], bot_user: str) -> bool:
    return f"<@{bot_user}" in str(event.get("text") or "")


def shared_files(event: Mapping[str, Any]) -> list[SharedFile]:
    return [
        SharedFile(
            url=str(f.get("url_private_download") or f.get("url_private") or ""),
            name=str(f.get("name") or f.get("title") or "file"),
            content_type=str(f.get("mimetype") or "application/octet-stream"),
            size=int(f.get("size") or 0),
        )
        for f in event.get("files") or ()
        if f.get("url_private_download") or f.get("url_private")
    ]


def command(body: Mapping[str, Any], installed: str) -> IncomingMessage:
    """A slash command as the text command it is (``/run digest``); its ``response_url``
    rides along as the reply handle, for a channel the bot may not post in."""
    text = f"{body['command']} {body.get('text') or ''}".strip()
    return IncomingMessage(
        ref=ConversationRef(
            channel=CHANNEL,
            workspace=str(body.get("team_id") or ""),
            chat=str(body["channel_id"]),
            handle=str(body.get("response_url") or ""),
        ),
        # Slash commands carry no message id; the trigger id is unique per invocation.
        external_id=f"command:{body['trigger_id']}",
        author=Author(
            account(str(body["user_id"]), str(body.get("team_id") or ""), installed),
            str(body.get("user_name") or ""),
        ),
        text=text,
        raw=dict(body),
    )


def blocks(text: str, buttons: Sequence[Button]) -> list[dict[str, Any]]:
    """A message's text over a row of buttons (the text must fit one section block)."""
    elements = [
        {
            "type": "button",
            "text": {"type": "plain_text", "text": b.label[:75]},
            "action_id": f"{ACTION_PREFIX}{index}",
            "value": b.command[:2000],
        }
        for index, b in enumerate(buttons[:25])
    ]
    section = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}] if text else []
    return [*section, {"type": "actions", "block_id": "sb-buttons", "elements": elements}]


def button(body: Mapping[str, Any], installed: str) -> IncomingMessage | None:
    """A click on one of our buttons, as the command it stands for, from the person who
    clicked, in the conversation of the message that carries it; None for other actions."""
    actions = [
        a for a in body.get("actions") or () if str(a.get("action_id")).startswith(ACTION_PREFIX)
    ]
    container = body.get("container") or {}
    channel = str((body.get("channel") or {}).get("id") or container.get("channel_id") or "")
    if not actions or not channel:
        return None
    action = actions[0]
    thread = str(container.get("thread_ts") or (body.get("message") or {}).get("thread_ts") or "")
    user = body.get("user") or {}
    return IncomingMessage(
        ref=ConversationRef(
            channel=CHANNEL,
            workspace=str((body.get("team") or {}).get("id") or user.get("team_id") or ""),
            chat=channel,
            thread=thread,
            handle=str(body.get("response_url") or ""),
        ),
        external_id=f"action:{channel}:{action.get('action_ts') or body.get('trigger_id')}",
        author=Author(
            account(str(user.get("id") or ""), str(user.get("team_id") or ""), installed),
            str(user.get("username") or ""),
        ),
        text=str(action.get("value") or ""),
        raw=dict(body),
    )
