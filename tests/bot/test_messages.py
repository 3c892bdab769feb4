"""The message vocabulary: outgoing files go by reference, never as bytes in a payload."""

from __future__ import annotations

import json

import pytest

from bot.messages import Attachment, ConversationRef, OutgoingMessage

REF = ConversationRef(channel="web", chat="c1")


def test_an_outgoing_file_goes_by_its_id_and_comes_back_the_same() -> None:
    kept = Attachment("chart.png", "image/png", size=1027, file_id=42)
    out = OutgoingMessage(REF, "here", (kept,), idempotency_key="k", in_reply_to=7, message_id=9)

    payload = out.to_dict()

    assert payload["attachments"] == [
        {
            "filename": "chart.png",
            "content_type": "image/png",
            "size": 1027,
            "url": "",
            "file_id": 42,
        }
    ]
    assert OutgoingMessage.from_dict(json.loads(json.dumps(payload))) == out


def test_bytes_not_yet_kept_cannot_be_written_into_a_payload() -> None:
    unkept = Attachment("chart.png", "image/png", data=b"\x89PNG\x00\x01")
    out = OutgoingMessage(REF, "here", (unkept,), idempotency_key="k")

    with pytest.raises(ValueError, match=r"chart\.png .*bot\.files\.keep"):
        out.to_dict()


def test_a_payload_written_before_files_went_by_reference_is_still_read() -> None:
    """Outbox rows (and stream entries) from before kept the bytes inline as latin-1 text."""
    old = {
        "ref": REF.to_dict(),
        "text": "your export",
        "attachments": [
            {
                "filename": "notes.md",
                "content_type": "text/markdown",
                "size": 5,
                "url": "",
                "data": "caf\xe9!",
            }
        ],
        "idempotency_key": "reply:1:0",
        "in_reply_to": 1,
    }

    out = OutgoingMessage.from_dict(old)

    (attachment,) = out.attachments
    assert (attachment.filename, attachment.data, attachment.file_id) == (
        "notes.md",
        "café!".encode("latin-1"),
        None,
    )
    assert (out.idempotency_key, out.in_reply_to, out.message_id) == ("reply:1:0", 1, None)
