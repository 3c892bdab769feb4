"""Built-in commands as a person sees them in the reply text."""

from __future__ import annotations

from bot import files
from bot.app import Runtime
from tests.fakes.llm_server import FakeLLM
from tests.support import reply_to


async def test_help_lists_every_command_with_a_summary(runtime: Runtime) -> None:
    text = (await reply_to(runtime, "/help")).text

    for usage in ("/help", "/persona list", "/new", "/history [N]", "/export", "/usage", "/retry"):
        assert usage in text
    assert "— list the commands" in text


async def test_unknown_command_names_the_closest_one(runtime: Runtime) -> None:
    text = (await reply_to(runtime, "/hlep")).text

    assert text.startswith("I don't know the command /hlep. Did you mean /help?")


async def test_wrong_arguments_get_the_usage_line(runtime: Runtime) -> None:
    assert (await reply_to(runtime, "/persona")).text.startswith("Usage: /persona list")
    assert (await reply_to(runtime, "/persona use")).text.startswith("Usage: /persona list")
    assert (await reply_to(runtime, "/new please")).text == "Usage: /new"
    assert "Usage: /history [N]" in (await reply_to(runtime, "/history many")).text


async def test_bot_addressed_commands_work(runtime: Runtime) -> None:
    assert "Commands:" in (await reply_to(runtime, "/help@switchboard_bot")).text


async def test_persona_list_marks_the_active_one(runtime: Runtime) -> None:
    text = (await reply_to(runtime, "/persona list")).text

    assert "→ assistant — A general assistant" in text
    assert "  writer — " in text and "  coder — " in text


async def test_persona_use_switches_the_model_prompt(runtime: Runtime, llm: FakeLLM) -> None:
    text = (await reply_to(runtime, "/persona use writer")).text
    assert text.startswith("Now talking to writer.")

    await reply_to(runtime, "tighten this")
    assert "careful editor" in llm.requests[-1]["messages"][0]["content"]
    assert "→ writer" in (await reply_to(runtime, "/persona list")).text


async def test_unknown_persona_is_refused_with_a_suggestion(runtime: Runtime) -> None:
    text = (await reply_to(runtime, "/persona use wirter")).text

    assert text == (
        "There is no persona called 'wirter'. Did you mean writer? "
        "Known personas: assistant, coder, writer."
    )
    assert "→ assistant" in (await reply_to(runtime, "/persona list")).text


async def test_persona_show(runtime: Runtime) -> None:
    text = (await reply_to(runtime, "/persona show coder")).text

    assert text.startswith("coder — A programming helper")
    assert "Model: openai/fake-model (the default)" in text
    assert "Temperature: 0.2" in text


async def test_history_shows_the_last_messages(runtime: Runtime) -> None:
    await reply_to(runtime, "first")
    await reply_to(runtime, "second")
    lines = (await reply_to(runtime, "/history 2")).text.splitlines()

    assert len(lines) == 2
    assert lines[0].endswith("you: second") and lines[1].endswith("assistant: echo: second")


async def test_export_attaches_the_conversation_as_markdown(runtime: Runtime) -> None:
    await reply_to(runtime, "remember the milk")
    out = await reply_to(runtime, "/export")

    assert out.text == "Here is this conversation (2 messages) as Markdown."
    (attachment,) = out.attachments
    assert attachment.filename.endswith(".md") and attachment.content_type == "text/markdown"
    document = (await files.content(runtime.core.engine, attachment)).decode()
    assert document.startswith("# Conversation")
    assert "remember the milk" in document and "echo: remember the milk" in document


async def test_usage_sums_tokens_per_persona_and_model(runtime: Runtime) -> None:
    assert (await reply_to(runtime, "/usage")).text == "No model calls in this conversation yet."
    await reply_to(runtime, "one two three")
    assert "assistant · openai/fake-model: 1 call, " in (await reply_to(runtime, "/usage")).text
    await reply_to(runtime, "four five")
    text = (await reply_to(runtime, "/usage")).text

    assert "assistant · openai/fake-model: 2 calls" in text
    assert "no price known" in text
