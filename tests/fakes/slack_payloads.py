"""Slack payloads as Slack sends them, for tests in both modes.

Shapes follow Slack's public reference (Events API wrapper and message subtypes, slash
command form fields, the ``block_actions`` interaction payload, Socket Mode frames). The same
builders feed the Socket Mode envelopes of ``tests.fakes.slack_server.FakeSlack`` and the signed
HTTP requests a test posts to Switchboard's ``/slack/events``:

    event = app_mention("summarise this", user="U0PERSON1", channel="C0GENERAL")
    request = signed_event(SIGNING_SECRET, event_callback(event))
    await session.post(url, data=request.body, headers=request.headers)

Every id defaults to the fake workspace below, which is also what ``FakeSlack``'s
``auth.test`` reports, so events from "our own bot" are recognised as such.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

Json = dict[str, Any]
EnvelopeKind = Literal["events_api", "slash_commands", "interactive"]
ChannelType = Literal["im", "channel", "group", "mpim"]

TEAM_ID = "T0FAKETEAM"
TEAM_DOMAIN = "fake-team"
APP_ID = "A0FAKEAPP"
BOT_USER_ID = "U0FAKEBOT"
BOT_ID = "B0FAKEBOT"
BOT_TOKEN = "xoxb-0000-0000-fake-bot-token"
APP_TOKEN = "xapp-1-A0FAKEAPP-0000-fake-app-token"
SIGNING_SECRET = "fake-signing-secret"
VERIFICATION_TOKEN = "fake-verification-token"  # deprecated by Slack, still sent in payloads

PERSON = "U0PERSON1"
DM_CHANNEL = "D0PERSON1"
CHANNEL = "C0GENERAL"
OTHER_BOT_ID = "B0OTHERBOT"


class _Stamps:
    """Message timestamps as Slack writes them ("seconds.micros"), unique and increasing.

    They follow the real clock so code that ages messages by their ts sees fresh ones."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        micros = max(int(time.time() * 1_000_000), self._last + 1)
        self._last = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


_stamps = _Stamps()
_event_numbers = itertools.count(1)


def new_ts() -> str:
    return _stamps.next()


def new_event_id() -> str:
    return f"Ev{next(_event_numbers):04d}{secrets.token_hex(4).upper()}"


def new_trigger_id() -> str:
    return f"{secrets.randbelow(10**10)}.{secrets.randbelow(10**10)}.{secrets.token_hex(16)}"


# -- the inner `event` of an event_callback ------------------------------------------------


def _rich_text(text: str) -> list[Json]:
    section = {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
    return [{"type": "rich_text", "block_id": secrets.token_hex(3), "elements": [section]}]


def message(
    text: str,
    *,
    user: str = PERSON,
    channel: str = DM_CHANNEL,
    channel_type: ChannelType = "im",
    ts: str | None = None,
    thread_ts: str | None = None,
    parent_user_id: str | None = None,
    team: str = TEAM_ID,
) -> Json:
    """A person's message; with ``thread_ts`` a reply in that thread."""
    stamp = ts or new_ts()
    event: Json = {
        "type": "message",
        "user": user,
        "text": text,
        "ts": stamp,
        "client_msg_id": str(uuid.uuid4()),
        "team": team,
        "blocks": _rich_text(text),
        "channel": channel,
        "event_ts": stamp,
        "channel_type": channel_type,
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
        event["parent_user_id"] = parent_user_id or user
    return event


def dm(text: str, *, user: str = PERSON, channel: str = DM_CHANNEL, **extra: Any) -> Json:
    return message(text, user=user, channel=channel, channel_type="im", **extra)


def channel_message(text: str, *, user: str = PERSON, channel: str = CHANNEL, **extra: Any) -> Json:
    return message(text, user=user, channel=channel, channel_type="channel", **extra)


def app_mention(
    text: str,
    *,
    user: str = PERSON,
    channel: str = CHANNEL,
    bot_user_id: str = BOT_USER_ID,
    ts: str | None = None,
    thread_ts: str | None = None,
    team: str = TEAM_ID,
) -> Json:
    """``@bot text`` in a channel: Slack writes the mention into the text as ``<@U…>``."""
    stamp = ts or new_ts()
    full = f"<@{bot_user_id}> {text}"
    event: Json = {
        "type": "app_mention",
        "user": user,
        "text": full,
        "ts": stamp,
        "client_msg_id": str(uuid.uuid4()),
        "team": team,
        "blocks": _rich_text(full),
        "channel": channel,
        "event_ts": stamp,
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event


def message_changed(
    *,
    ts: str,
    text: str,
    previous_text: str,
    user: str = PERSON,
    channel: str = DM_CHANNEL,
    channel_type: ChannelType = "im",
) -> Json:
    """A person edited the message ``ts``; the event's own ts is the time of the edit."""
    edited_at = new_ts()
    original = {"type": "message", "user": user, "text": previous_text, "ts": ts}
    edited = {**original, "text": text, "edited": {"user": user, "ts": edited_at}}
    return {
        "type": "message",
        "subtype": "message_changed",
        "hidden": True,
        "channel": channel,
        "channel_type": channel_type,
        "ts": edited_at,
        "event_ts": edited_at,
        "message": edited,
        "previous_message": original,
    }


def message_deleted(
    *,
    ts: str,
    previous_text: str,
    user: str = PERSON,
    channel: str = DM_CHANNEL,
    channel_type: ChannelType = "im",
) -> Json:
    stamp = new_ts()
    return {
        "type": "message",
        "subtype": "message_deleted",
        "hidden": True,
        "channel": channel,
        "channel_type": channel_type,
        "ts": stamp,
        "event_ts": stamp,
        "deleted_ts": ts,
        "previous_message": {"type": "message", "user": user, "text": previous_text, "ts": ts},
    }


def bot_message(
    text: str,
    *,
    bot_id: str = OTHER_BOT_ID,
    username: str = "another-bot",
    channel: str = CHANNEL,
    channel_type: ChannelType = "channel",
) -> Json:
    """Another integration's post (the ``bot_message`` subtype carries no ``user``)."""
    stamp = new_ts()
    return {
        "type": "message",
        "subtype": "bot_message",
        "text": text,
        "ts": stamp,
        "bot_id": bot_id,
        "username": username,
        "channel": channel,
        "event_ts": stamp,
        "channel_type": channel_type,
    }


def own_message(
    text: str,
    *,
    channel: str = DM_CHANNEL,
    channel_type: ChannelType = "im",
    thread_ts: str | None = None,
    bot_user_id: str = BOT_USER_ID,
    bot_id: str = BOT_ID,
    app_id: str = APP_ID,
) -> Json:
    """The echo of our own ``chat.postMessage``: a plain message from the bot user."""
    event = message(
        text, user=bot_user_id, channel=channel, channel_type=channel_type, thread_ts=thread_ts
    )
    del event["client_msg_id"]
    event.update({"bot_id": bot_id, "app_id": app_id})
    return event


def shared_file(
    file_id: str,
    *,
    name: str,
    url_private: str,
    size: int,
    mimetype: str = "application/octet-stream",
    user: str = PERSON,
) -> Json:
    """One entry of a message's ``files``: downloading ``url_private`` needs the bot token."""
    filetype = name.rsplit(".", 1)[-1].lower() if "." in name else "binary"
    return {
        "id": file_id,
        "created": int(time.time()),
        "timestamp": int(time.time()),
        "name": name,
        "title": name,
        "mimetype": mimetype,
        "filetype": filetype,
        "pretty_type": filetype.upper(),
        "user": user,
        "user_team": TEAM_ID,
        "editable": False,
        "size": size,
        "mode": "hosted",
        "is_external": False,
        "external_type": "",
        "is_public": False,
        "public_url_shared": False,
        "display_as_bot": False,
        "url_private": url_private,
        "url_private_download": f"{url_private.rsplit('/', 1)[0]}/download/{name}",
    }


def file_share(
    files: list[Json],
    text: str = "",
    *,
    user: str = PERSON,
    channel: str = DM_CHANNEL,
    channel_type: ChannelType = "im",
    thread_ts: str | None = None,
) -> Json:
    """A person shared files (with an optional comment as the text)."""
    event = message(
        text, user=user, channel=channel, channel_type=channel_type, thread_ts=thread_ts
    )
    event.update({"subtype": "file_share", "files": files, "upload": False})
    return event


# -- what wraps an event, and the other two kinds of request ---------------------------------


def event_callback(
    event: Json,
    *,
    team_id: str = TEAM_ID,
    api_app_id: str = APP_ID,
    event_id: str | None = None,
    event_time: int | None = None,
    bot_user_id: str = BOT_USER_ID,
) -> Json:
    """The Events API wrapper; ``event_id`` stays the same when Slack retries a delivery."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "context_team_id": team_id,
        "context_enterprise_id": None,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or new_event_id(),
        "event_time": event_time if event_time is not None else int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-{secrets.token_hex(12)}",
    }


def url_verification(challenge: str) -> Json:
    return {"token": VERIFICATION_TOKEN, "challenge": challenge, "type": "url_verification"}


def slash_command(
    command: str,
    text: str = "",
    *,
    response_url: str,
    user_id: str = PERSON,
    user_name: str = "person",
    channel_id: str = CHANNEL,
    channel_name: str = "general",
    team_id: str = TEAM_ID,
    team_domain: str = TEAM_DOMAIN,
    api_app_id: str = APP_ID,
    trigger_id: str | None = None,
) -> dict[str, str]:
    """The form fields of a slash command (every value a string, as on the wire)."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or new_trigger_id(),
    }


def block_actions(
    action_id: str,
    value: str,
    *,
    response_url: str,
    message_ts: str,
    user_id: str = PERSON,
    user_name: str = "person",
    channel_id: str = CHANNEL,
    channel_name: str = "general",
    thread_ts: str | None = None,
    block_id: str = "actions",
    message_text: str = "",
    team_id: str = TEAM_ID,
    api_app_id: str = APP_ID,
) -> Json:
    """A click on a button (``action_id``/``value``) in the bot's message ``message_ts``."""
    clicked: Json = {
        "action_id": action_id,
        "block_id": block_id,
        "text": {"type": "plain_text", "text": value, "emoji": True},
        "value": value,
        "type": "button",
        "action_ts": new_ts(),
    }
    posted: Json = {
        "type": "message",
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "app_id": api_app_id,
        "text": message_text,
        "ts": message_ts,
        "team": team_id,
        "blocks": [{"type": "actions", "block_id": block_id, "elements": []}],
    }
    container: Json = {
        "type": "message",
        "message_ts": message_ts,
        "channel_id": channel_id,
        "is_ephemeral": False,
    }
    if thread_ts is not None:
        posted["thread_ts"] = thread_ts
        container["thread_ts"] = thread_ts
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": VERIFICATION_TOKEN,
        "container": container,
        "trigger_id": new_trigger_id(),
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "message": posted,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [clicked],
    }


# -- Socket Mode frames ----------------------------------------------------------------------


def envelope(
    kind: EnvelopeKind,
    payload: Json,
    *,
    envelope_id: str | None = None,
    retry_attempt: int = 0,
    retry_reason: str = "",
) -> Json:
    """A Socket Mode envelope; slash commands accept a response payload in the ack."""
    frame: Json = {
        "envelope_id": envelope_id or str(uuid.uuid4()),
        "payload": payload,
        "type": kind,
        "accepts_response_payload": kind == "slash_commands",
    }
    if kind == "events_api":
        frame.update({"retry_attempt": retry_attempt, "retry_reason": retry_reason})
    return frame


def hello(*, num_connections: int, app_id: str = APP_ID, host: str = "fake-slack") -> Json:
    return {
        "type": "hello",
        "num_connections": num_connections,
        "debug_info": {"host": host, "build_number": 1, "approximate_connection_time": 18060},
        "connection_info": {"app_id": app_id},
    }


def disconnect(reason: str, *, host: str = "fake-slack") -> Json:
    """``refresh_requested``, ``warning`` (closing in about 10 s), ``too_many_websockets``…"""
    return {"type": "disconnect", "reason": reason, "debug_info": {"host": host}}


# -- HTTP mode: what Slack posts to a Request URL, signed ------------------------------------


@dataclass(frozen=True)
class SignedRequest:
    body: bytes
    headers: dict[str, str]


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 signature: HMAC-SHA256 over ``v0:{timestamp}:{body}``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_request(
    secret: str,
    body: bytes,
    content_type: str,
    *,
    timestamp: int | None = None,
    retry_num: int | None = None,
    retry_reason: str | None = None,
) -> SignedRequest:
    """Headers as Slack sends them; pass an old ``timestamp`` to build a replayed request."""
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature(secret, stamp, body),
    }
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
    return SignedRequest(body, headers)


def signed_event(secret: str, payload: Json, **options: Any) -> SignedRequest:
    """An Events API delivery (``event_callback`` or ``url_verification``), JSON."""
    body = json.dumps(payload).encode()
    return signed_request(secret, body, "application/json", **options)


def signed_command(secret: str, form: dict[str, str], **options: Any) -> SignedRequest:
    """A slash command, form-encoded."""
    body = urlencode(form).encode()
    return signed_request(secret, body, "application/x-www-form-urlencoded", **options)


def signed_interaction(secret: str, payload: Json, **options: Any) -> SignedRequest:
    """An interaction (a button click): one form field ``payload`` holding JSON."""
    body = urlencode({"payload": json.dumps(payload)}).encode()
    return signed_request(secret, body, "application/x-www-form-urlencoded", **options)
