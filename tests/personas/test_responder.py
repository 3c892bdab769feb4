"""What people send with a message reaches the persona: text files with their names, within
the file budget (cut, and said so, when larger); files it cannot read are named."""

from __future__ import annotations

from bot.app import Runtime
from bot.messages import Attachment
from tests.fakes.llm_server import FakeLLM
from tests.support import reply_to


def _asked(llm: FakeLLM) -> str:
    content: str = llm.requests[-1]["messages"][-1]["content"]
    return content


async def test_a_text_file_reaches_the_persona_with_its_name(
    runtime: Runtime, llm: FakeLLM
) -> None:
    notes = Attachment("notes.md", "text/markdown", data=b"# Standup\n- Ann: demo ready")
    out = await reply_to(runtime, "who is ready?", attachments=(notes,))

    assert _asked(llm) == "who is ready?\n\n--- notes.md ---\n# Standup\n- Ann: demo ready"
    assert out.text == f"echo: {_asked(llm)}"  # nothing cut, nothing unread: no note


async def test_a_huge_file_is_cut_to_the_budget_and_the_reply_says_so(
    runtime: Runtime, llm: FakeLLM
) -> None:
    line = "row {n}: the quick brown fox jumps over the lazy dog\n"
    huge = "".join(line.format(n=n) for n in range(40_000)).encode()
    big = Attachment("big.txt", "text/plain", data=huge)
    out = await reply_to(runtime, "summarise this log", attachments=(big,))

    asked = _asked(llm)
    assert asked.startswith("summarise this log\n\n--- big.txt ---\nrow 0: the quick")
    assert "[big.txt is cut here: only its first" in asked
    assert len(asked) < len(huge) // 10
    budget = runtime.core.settings.file_token_budget
    assert runtime.core.llm.count_tokens(llm.requests[-1]["messages"][-1:], "fake-model") < (
        budget + runtime.core.settings.history_token_budget
    )
    assert f"of {len(huge):,} characters" in out.text
    assert "I read only the start of big.txt" in out.text.split("\n\n")[-1]


async def test_a_file_that_is_not_text_is_named_with_what_would_work(
    runtime: Runtime, llm: FakeLLM
) -> None:
    png = Attachment("photo.png", "image/png", data=b"\x89PNG\r\n\x1a\n" + bytes(64))
    out = await reply_to(runtime, "what is in this picture?", attachments=(png,))

    assert "photo.png (image/png)" in _asked(llm)
    assert "\x89PNG" not in _asked(llm)
    assert out.text.endswith(
        "(I couldn't read photo.png (image/png): I can read text files "
        "(.txt, .md, .csv, .json, …).)"
    )


async def test_a_reply_is_streamed_only_while_someone_watches_the_chat(
    runtime: Runtime, llm: FakeLLM
) -> None:
    from adapters.local import LocalStream
    from tests.support import in_browser

    assert await in_browser(runtime, "ann", "nobody reads") == "echo: nobody reads"
    await LocalStream(runtime.redis, "web").watched("ann")  # the page is open
    assert await in_browser(runtime, "ann", "someone reads") == "echo: someone reads"

    assert [bool(request.get("stream")) for request in llm.requests] == [False, True]
