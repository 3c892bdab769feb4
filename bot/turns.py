"""What a handler gets (a stored inbound message with its conversation) and what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.messages import Attachment, ConversationRef


@dataclass(frozen=True)
class Turn:
    message_id: int
    conversation_id: int
    user_id: int | None
    persona_id: int | None
    text: str
    attachments: tuple[Attachment, ...]
    ref: ConversationRef
    context_since: datetime
    created_at: datetime


@dataclass(frozen=True)
class Reply:
    text: str
    attachments: tuple[Attachment, ...] = ()
    # A failed turn keeps its inbound message as "failed" so /retry can pick it up again.
    error: str | None = None
    persona_id: int | None = None
    # Why the sender may not talk here (bot/access.py): the message is kept as "refused",
    # and the reply, if it has any text, is all they get.
    refused: str | None = None
