"""The vocabulary every part of Switchboard speaks: where a message came from, what it
says, and what goes back. Adapters translate platform payloads into these at the edge."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

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
    # Inline content for files we produce (exports, documents); platforms' files keep a url.
    data: bytes = b""
    # Where a received file's content is kept (the files table), once it is stored.
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref.to_dict(),
            "text": self.text,
            "attachments": [
                {**a.metadata(), "data": a.data.decode("latin-1")} for a in self.attachments
            ],
            "idempotency_key": self.idempotency_key,
            "in_reply_to": self.in_reply_to,
            "buttons": [dataclasses.asdict(button) for button in self.buttons],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutgoingMessage:
        attachments = tuple(
            Attachment(
                filename=a["filename"],
                content_type=a["content_type"],
                size=a["size"],
                url=a["url"],
                data=a["data"].encode("latin-1"),
            )
            for a in data["attachments"]
        )
        return cls(
            ref=ConversationRef.from_dict(data["ref"]),
            text=data["text"],
            attachments=attachments,
            idempotency_key=data["idempotency_key"],
            in_reply_to=data["in_reply_to"],
            buttons=tuple(Button(**button) for button in data.get("buttons", ())),
        )


@dataclass(frozen=True)
class SentRef:
    """What a platform called the message we sent (Slack ts, Telegram message_id, …)."""

    external_id: str
