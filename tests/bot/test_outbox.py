"""Replies carry their files by reference: the bytes are kept once in the files table, in the
transaction that writes the outbox row, and the row (JSONB, which cannot hold a NUL) and the
stream entries carry only ids. Rows written before that still go out and download."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from bot import files, outbox
from bot.app import Runtime
from bot.conversation import conversation_for, message_file
from bot.handler import load_turn
from bot.messages import Attachment, OutgoingMessage
from bot.storage.models import Message, Outbox, StoredFile
from bot.turns import Reply
from tests.support import EVERY_BYTE, REF, delivered, drain, outbox_rows, say


async def _stored_files(runtime: Runtime) -> list[StoredFile]:
    async with runtime.core.sessions() as session:
        return list((await session.scalars(select(StoredFile))).all())


async def _outbound_attachments(runtime: Runtime) -> list[list[dict[str, object]]]:
    async with runtime.core.sessions() as session:
        rows = await session.scalars(
            select(Message.attachments).where(Message.direction == "out").order_by(Message.id)
        )
        return list(rows)


async def test_a_binary_file_is_kept_once_and_only_its_id_is_in_the_outbox(
    runtime: Runtime,
) -> None:
    core = runtime.core
    chart = Attachment("chart.png", "image/png", data=EVERY_BYTE)
    turn = await load_turn(core, (await say(runtime, "draw it")).message_id)
    assert turn is not None
    await outbox.commit_reply(core, turn, Reply("Your chart.", attachments=(chart,)))
    again = OutgoingMessage(REF, "The same chart.", (chart,), idempotency_key="post:again")
    await outbox.post(core, turn.conversation_id, again)

    (kept,) = await _stored_files(runtime)
    assert (kept.filename, kept.content_type, bytes(kept.data)) == (
        "chart.png",
        "image/png",
        EVERY_BYTE,
    )
    rows = await outbox_rows(runtime)
    assert len(rows) == 2
    for row, stored in zip(rows, await _outbound_attachments(runtime), strict=True):
        assert len(json.dumps(row.payload)) < 500  # metadata, no bytes
        assert row.payload["message_id"] == row.message_id
        expected = {
            "filename": "chart.png",
            "content_type": "image/png",
            "size": len(EVERY_BYTE),
            "url": "",
            "file_id": kept.id,
        }
        assert row.payload["attachments"] == stored == [expected]

    await drain(runtime)
    sent = await delivered(runtime)
    assert [out.text for out in sent] == ["Your chart.", "The same chart."]
    for out in sent:
        (attachment,) = out.attachments
        assert (attachment.file_id, attachment.data) == (kept.id, b"")
        assert await files.content(core.engine, attachment) == EVERY_BYTE


async def _old_reply(runtime: Runtime, key: str, data: bytes, status: str) -> tuple[int, int]:
    """A reply as the outbox wrote it before files went by reference: the bytes inline as
    latin-1 text (never a NUL: JSONB refused those), no file id. Returns (outbox, message)."""
    meta: dict[str, object] = {"filename": "old.bin", "content_type": "application/octet-stream"}
    meta |= {"size": len(data), "url": ""}
    payload = {
        "ref": REF.to_dict(),
        "text": "an old reply",
        "attachments": [{**meta, "data": data.decode("latin-1")}],
        "idempotency_key": key,
        "in_reply_to": None,
    }
    conversation_id = await conversation_for(runtime.core, REF)
    message = Message(
        conversation_id=conversation_id,
        channel="terminal",
        direction="out",
        text="an old reply",
        attachments=[meta],
        status="handled",
    )
    async with runtime.core.sessions.begin() as session:
        session.add(message)
        await session.flush()
        row = Outbox(message_id=message.id, conversation_id=conversation_id, channel="terminal")
        row.payload, row.idempotency_key, row.status = payload, key, status
        session.add(row)
    return row.id, message.id


async def test_a_reply_written_with_inline_bytes_before_still_goes_out_and_downloads(
    runtime: Runtime,
) -> None:
    core, old = runtime.core, bytes(range(1, 256))
    outbox_id, message_id = await _old_reply(runtime, "reply:old", old, "pending")

    assert await outbox.deliver(core, core.channels, outbox_id) == "sent"

    (out,) = await delivered(runtime)
    (attachment,) = out.attachments
    assert attachment.file_id is not None and attachment.data == b""
    assert await files.content(core.engine, attachment) == old
    # Kept on the way out: the row and the message now say where the bytes are.
    (row,) = await outbox_rows(runtime)
    assert row.payload["attachments"][0]["file_id"] == attachment.file_id
    assert "data" not in row.payload["attachments"][0]
    assert (await _outbound_attachments(runtime))[0][0]["file_id"] == attachment.file_id
    found = await message_file(core, REF, message_id, 0)
    assert found is not None and found.data == old


async def test_a_file_sent_inline_before_still_downloads(runtime: Runtime) -> None:
    old = "déjà vu".encode("latin-1")
    _, message_id = await _old_reply(runtime, "reply:sent-before", old, "sent")

    found = await message_file(runtime.core, REF, message_id, 0)

    assert found is not None and (found.filename, found.data) == ("old.bin", old)
    async with runtime.core.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(StoredFile)) == 0
