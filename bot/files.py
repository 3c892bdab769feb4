"""Files people send and files Switchboard sends: kept once per content in Postgres, read
back as bytes or as text.

An adapter hands over a received file's bytes in ``Attachment.data``; ``keep`` stores them
while the message is persisted (before the platform is acknowledged), and the message keeps
only the metadata with a ``file_id``. A reply's files are kept the same way when the outbox
writes it (bot/outbox.py), so the outbox row and the local streams carry ids, never bytes.
Workers on any machine, and the senders, read the content back with ``content``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot import replies
from bot.channels import MAX_FILE, MAX_FILE_TEXT
from bot.errors import UserFacingError
from bot.messages import Attachment, kind_of
from bot.storage.models import StoredFile

TOO_LARGE = "chat platforms refuse larger files; send a smaller one or a link"
TEXT_TYPES = (
    "application/json",
    "application/xml",
    "application/yaml",
    "application/x-yaml",
    "application/csv",
    "application/javascript",
    "application/x-sh",
    "application/sql",
    "application/toml",
)


def read_path(path: Path) -> Attachment:
    """A file on disk as an attachment; one platforms would refuse is refused here."""
    if path.stat().st_size > MAX_FILE:
        raise UserFacingError(f"{path.name} is larger than {MAX_FILE_TEXT}: {TOO_LARGE}")
    return Attachment(path.name, kind_of(path.name), data=path.read_bytes())


async def keep(conn: AsyncConnection, attachments: Sequence[Attachment]) -> tuple[Attachment, ...]:
    """The attachments with their inline content stored (and dropped from the object)."""
    kept = []
    for attachment in attachments:
        if not attachment.data:
            kept.append(attachment)
            continue
        if len(attachment.data) > MAX_FILE:
            raise UserFacingError(
                f"{attachment.filename} is larger than {MAX_FILE_TEXT}: {TOO_LARGE}"
            )
        file_id = await _stored(conn, attachment)
        kept.append(replace(attachment, data=b"", size=len(attachment.data), file_id=file_id))
    return tuple(kept)


async def _stored(conn: AsyncConnection, attachment: Attachment) -> int:
    """The id of this content in the files table; the bytes go over only when it is new (a
    platform's retry, or the same file sent again, costs a lookup). Hashed off the event
    loop: this runs before an acknowledgement, and a big file takes milliseconds."""
    digest = await asyncio.to_thread(lambda: hashlib.sha256(attachment.data).hexdigest())
    found = await conn.scalar(_FIND, {"sha256": digest})
    if found is None:
        values = {
            "sha256": digest,
            "filename": attachment.filename,
            "content_type": attachment.content_type,
            "size": len(attachment.data),
            "data": attachment.data,
        }
        found = await conn.scalar(_INSERT, values) or await conn.scalar(_FIND, values)
    assert found is not None
    return int(found)


_FIND = select(StoredFile.id).where(StoredFile.sha256 == bindparam("sha256"))
# Two senders of the same new file at once: one row, and the loser reads the winner's id.
_INSERT = (
    insert(StoredFile)
    .values(
        {name: bindparam(name) for name in ("sha256", "filename", "content_type", "size", "data")}
    )
    .on_conflict_do_nothing(index_elements=["sha256"])
    .returning(StoredFile.id)
)


async def content(engine: AsyncEngine, attachment: Attachment) -> bytes:
    """A file's bytes: inline, or from the files table."""
    if attachment.data:
        return attachment.data
    if attachment.file_id is not None:
        async with engine.connect() as conn:
            data = await conn.scalar(
                select(StoredFile.data).where(StoredFile.id == attachment.file_id)
            )
        if data is not None:
            return bytes(data)
    if attachment.size > MAX_FILE:
        raise UserFacingError(f"{attachment.filename} is larger than {MAX_FILE_TEXT}: {TOO_LARGE}")
    raise UserFacingError(
        f"I cannot open {attachment.filename}: its content was not kept. Send it again."
    )


def is_text(attachment: Attachment) -> bool:
    kind = attachment.content_type.split(";")[0].strip().lower()
    return kind.startswith("text/") or kind in TEXT_TYPES or kind.endswith(("+json", "+xml"))


async def text_of(engine: AsyncEngine, attachment: Attachment) -> str:
    """A text file's content; other kinds are refused with what would work."""
    if not is_text(attachment):
        raise UserFacingError(replies.not_text(attachment.filename, attachment.content_type))
    return (await content(engine, attachment)).decode("utf-8", errors="replace")


async def texts(
    engine: AsyncEngine, attached: Sequence[Attachment]
) -> tuple[list[tuple[Attachment, str]], list[Attachment]]:
    """The text files among ``attached`` with their content, and the other files (unread)."""
    read = [
        (attachment, await text_of(engine, attachment))
        for attachment in attached
        if is_text(attachment)
    ]
    return read, [attachment for attachment in attached if not is_text(attachment)]


def section(filename: str, text: str) -> str:
    """A file's text among other text, headed by its name."""
    return f"--- {filename} ---\n{text}"
