"""The vocabulary every part of Switchboard speaks: where a message came from, what it
says, and what goes back. Adapters translate platform payloads into these at the edge."""

from __future__ import annotations

import dataclasses
import mimetypes
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Text formats people attach that Python's mimetypes does not know on every system.
SUFFIX_TYPES = {
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".toml": "application/toml",
    ".md": "text/markdown",
    ".log": "text/plain",
    ".ini": "text/plain",
    ".cfg": "text/plain",
}


def kind_of(filename: str, declared: str = "") -> str:
    """A file's content type: the one declared unless it is missing or the generic one, else
    a guess from its name."""
    declared = declared.strip()
    if declared and declared.split(";")[0].strip().lower() != "application/octet-stream":
        return declared
    known = SUFFIX_TYPES.get(Path(filename).suffix.lower())
    return known or mimetypes.guess_type(filename)[0] or "application/octet-stream"


_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Drop what Postgres text cannot hold (NUL, lone surrogates from undecodable bytes)."""
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub("\ufffd", text)


def clean_filename(name: str | bytes) -> str:
    """A file name any platform sent, made printable: invalid UTF-8 becomes U+FFFD."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", errors="replace")
    name = clean_text(name).replace("/", "_").replace("\\", "_").strip()
    return name or "unnamed"


@dataclass(frozen=True)
class ConversationRef:
    """The serialisable address a worker replies to."""

    channel: str
    chat: str
    workspace: str = ""
    thread: str = ""
    # Email threading: the Message-ID to answer and the References chain.
    reply_to_message_id: str = ""
    references: tuple[str, ...] = ()
    # An opaque handle to answer one message by (a Slack response_url, a Discord
    # interaction token); not part of the conversation's identity.
    handle: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["references"] = list(self.references)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConversationRef:
        return cls(**{**data, "references": tuple(data.get("references", ()))})


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str = "application/octet-stream"
    size: int = 0
    url: str = ""
    # Inline content, in one process only: a file received or made (an export, a document)
    # until ``bot.files.keep`` stores it; platforms' files not downloaded keep a url.
    data: bytes = b""
    # Where the content is kept (the files table), in either direction, once it is stored.
    file_id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "filename", clean_filename(self.filename))
        if self.data and not self.size:
            object.__setattr__(self, "size", len(self.data))

    def metadata(self) -> dict[str, Any]:
        found = {
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "url": self.url,
        }
        return found if self.file_id is None else {**found, "file_id": self.file_id}


@dataclass(frozen=True)
class Author:
    external_id: str
    display_name: str = ""


@dataclass(frozen=True)
class IncomingMessage:
    ref: ConversationRef
    external_id: str
    author: Author
    text: str
    attachments: tuple[Attachment, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", clean_text(self.text))


@dataclass(frozen=True)
class Button:
    """A button under a message; clicking it sends ``command`` as the person who clicked,
    so the command's own checks decide whether the click counts. Channels without buttons
    show the command to type instead."""

    label: str
    command: str


@dataclass(frozen=True)
class OutgoingMessage:
    ref: ConversationRef
    text: str
    attachments: tuple[Attachment, ...] = ()
    # Ties a reply to the inbound message it answers; platforms that can, use it for dedup.
    idempotency_key: str = ""
    in_reply_to: int | None = None
    buttons: tuple[Button, ...] = ()
    # Its own row in ``messages``, once the outbox wrote it: where its files download from.
    message_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The message as JSON, its files by reference: the outbox row (JSONB, which cannot
        hold a NUL) and a stream entry carry file ids, never bytes."""
        return {
            "ref": self.ref.to_dict(),
            "text": self.text,
            "attachments": [_by_reference(a) for a in self.attachments],
            "idempotency_key": self.idempotency_key,
            "in_reply_to": self.in_reply_to,
            "buttons": [dataclasses.asdict(button) for button in self.buttons],
            "message_id": self.message_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutgoingMessage:
        return cls(
            ref=ConversationRef.from_dict(data["ref"]),
            text=data["text"],
            attachments=tuple(_attachment(a) for a in data["attachments"]),
            idempotency_key=data["idempotency_key"],
            in_reply_to=data["in_reply_to"],
            buttons=tuple(Button(**button) for button in data.get("buttons", ())),
            message_id=data.get("message_id"),
        )


def _by_reference(attachment: Attachment) -> dict[str, Any]:
    if attachment.data:
        raise ValueError(
            f"{attachment.filename} still carries its bytes: an outgoing file goes by "
            "reference, so keep it first (bot.files.keep gives it a file_id)"
        )
    return attachment.metadata()


def _attachment(data: dict[str, Any]) -> Attachment:
    """An attachment from a payload; one written before files went by reference (an old
    outbox row or stream entry) has its bytes inline as latin-1 text."""
    return Attachment(
        filename=data["filename"],
        content_type=data["content_type"],
        size=data["size"],
        url=data["url"],
        data=data.get("data", "").encode("latin-1"),
        file_id=data.get("file_id"),
    )


@dataclass(frozen=True)
class SentRef:
    """What a platform called the message we sent (Slack ts, Telegram message_id, …)."""

    external_id: str
