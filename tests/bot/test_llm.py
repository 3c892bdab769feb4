"""LLMGateway against real litellm talking real HTTP to the fake OpenAI-compatible server."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.errors import LLMAuthError, LLMError, LLMTimeout, LLMUnreachable
from bot.llm import (
    DEFAULT_ADDRESS,
    CallRecord,
    LLMGateway,
    TokenCounts,
    ToolCall,
)
from bot.replies import unreachable_text
from tests.fakes.llm_server import FakeLLM

HELLO = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "hello there world"},
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


class Records(list[CallRecord]):
    """The calls' ends, in order; ``starts`` the models of the calls as they started."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[str] = []

    async def started(self, model: str, context: Mapping[str, Any]) -> int | None:
        self.starts.append(model)
        return len(self.starts)

    async def ended(self, call: int | None, record: CallRecord) -> None:
        assert call == len(self.starts), "a call ended that was not the last one started"
        self.append(record)


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as server:
        yield server


@pytest.fixture
def records() -> Records:
    return Records()


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"model": "openai/fake-model", "llm_timeout": 5.0, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def gateway(fake: FakeLLM, records: Records) -> LLMGateway:
    return LLMGateway(make_settings(llm_api_base=fake.url), records)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- completions --------------------------------------------------------------------------


async def test_complete_returns_text_usage_and_records_the_call(
    gateway: LLMGateway, fake: FakeLLM, records: Records
) -> None:
    context = {"persona_id": 7, "conversation_id": 3}
    done = await gateway.complete(HELLO, temperature=0.3, max_tokens=50, context=context)

    assert done.text == "echo: hello there world"
    assert (done.prompt_tokens, done.completion_tokens) == (6, 4)
    assert done.model == "openai/fake-model"
    assert done.latency_ms > 0
    assert done.cost_usd is None
    sent = fake.requests[-1]
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("fake-model", 0.3, 50)
    assert sent["messages"] == HELLO
    assert records == [
        CallRecord("openai/fake-model", 6, 4, None, records[0].latency_ms, "ok", None, context)
    ]
    assert records.starts == ["openai/fake-model"]  # logged as it started, then completed


async def test_unset_options_are_not_sent(gateway: LLMGateway, fake: FakeLLM) -> None:
    await gateway.complete(HELLO)

    assert "temperature" not in fake.requests[-1]
    assert "tools" not in fake.requests[-1]


async def test_streaming_sends_deltas_and_still_reports_usage(
    gateway: LLMGateway, fake: FakeLLM, records: Records
) -> None:
    deltas: list[str] = []

    async def collect(text: str) -> None:
        deltas.append(text)

    done = await gateway.complete(HELLO, on_delta=collect)

    assert "".join(deltas) == done.text == "echo: hello there world"
    assert len(deltas) > 1
    assert (done.prompt_tokens, done.completion_tokens) == (6, 4)
    assert fake.requests[-1]["stream"] is True
    assert fake.requests[-1]["stream_options"] == {"include_usage": True}
    assert [r.status for r in records] == ["ok"]


async def test_streaming_counts_tokens_when_the_server_sends_no_usage(
    gateway: LLMGateway, fake: FakeLLM
) -> None:
    fake.stream_usage = False

    async def ignore(text: str) -> None:
        pass

    done = await gateway.complete(HELLO, on_delta=ignore)

    assert done.text == "echo: hello there world"
    assert done.prompt_tokens > 0
    assert done.completion_tokens > 0


async def test_an_exception_in_on_delta_reaches_the_caller_unchanged(
    gateway: LLMGateway, fake: FakeLLM, records: Records
) -> None:
    async def explode(text: str) -> None:
        raise RuntimeError("the chat platform went away")

    with pytest.raises(RuntimeError, match="went away"):
        await gateway.complete(HELLO, on_delta=explode, fallbacks=["openai/backup"])

    assert len(fake.requests) == 1
    assert [(r.status, r.error) for r in records] == [
        ("error", "stopped: on_delta raised RuntimeError")
    ]


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streamed"])
async def test_tool_calls_are_parsed(gateway: LLMGateway, fake: FakeLLM, streaming: bool) -> None:
    fake.script({"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_1"})

    async def ignore(text: str) -> None:
        pass

    done = await gateway.complete(
        [{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER_TOOL],
        on_delta=ignore if streaming else None,
    )

    assert done.tool_calls == (
        ToolCall("call_1", "get_weather", {"city": "Paris"}, '{"city": "Paris"}'),
    )
    assert fake.requests[-1]["tools"] == [WEATHER_TOOL]


async def test_count_tokens(gateway: LLMGateway) -> None:
    assert gateway.count_tokens(HELLO, "openai/fake-model") > 0


class WordCounter(list[str]):
    """Counts words, and keeps the model of each count it was asked for."""

    def __call__(self, messages: list[dict[str, Any]], model: str) -> int:
        self.append(model)
        return sum(len(str(m.get("content") or "").split()) for m in messages)


def test_a_counted_history_is_not_counted_again() -> None:
    counter = WordCounter()
    counts = TokenCounts(counter)
    history = [{"role": "user", "content": "one two three"}]

    assert counts(history, "m") == counts([dict(history[0])], "m") == 3
    assert counts(history, "other") == 3  # another model may count otherwise
    assert counts([{"role": "assistant", "content": "one two three"}], "m") == 3
    assert counts([{"role": "user", "content": "one two"}], "m") == 2
    assert counter == ["m", "other", "m", "m"]


def test_messages_with_more_than_text_are_always_counted() -> None:
    counter = WordCounter()
    counts = TokenCounts(counter)
    asked = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]}
    parts = {"role": "user", "content": [{"type": "text", "text": "one"}]}

    for messages in ([asked], [asked], [parts], [parts]):
        counts(messages, "m")
    assert len(counter) == 4


def test_the_least_recently_used_counts_are_forgotten_first() -> None:
    counter = WordCounter()
    counts = TokenCounts(counter, size=2)
    first, second, third = ([{"role": "user", "content": word}] for word in ("a", "b", "c"))

    counts(first, "m")
    counts(second, "m")
    counts(first, "m")  # used again: now the most recent
    counts(third, "m")  # forgets the second
    counts(first, "m")
    counts(second, "m")
    assert len(counter) == 4


def test_text_that_is_not_valid_unicode_is_counted() -> None:
    counts = TokenCounts(WordCounter())
    assert counts([{"role": "user", "content": "bad \udcff byte"}], "m") == 3


# -- embeddings ---------------------------------------------------------------------------


async def test_embeddings_are_deterministic_unit_vectors(
    gateway: LLMGateway, records: Records
) -> None:
    vectors = await gateway.embed(["alpha", "beta gamma", "alpha"], model="openai/fake-embed")

    assert [len(v) for v in vectors] == [384, 384, 384]
    assert vectors[0] == vectors[2] != vectors[1]
    assert math.isclose(math.fsum(x * x for x in vectors[1]), 1.0, rel_tol=1e-5)
    assert [(r.model, r.prompt_tokens, r.status) for r in records] == [
        ("openai/fake-embed", 4, "ok")
    ]


async def test_embedding_dimension_follows_the_server(records: Records) -> None:
    async with FakeLLM(dims=8) as server:
        gateway = LLMGateway(make_settings(llm_api_base=server.url), records)
        assert [len(v) for v in await gateway.embed(["x"], model="openai/fake-embed")] == [8]


async def test_embedding_failures_are_translated(gateway: LLMGateway, fake: FakeLLM) -> None:
    fake.fail_next(1, 503)

    with pytest.raises(LLMError, match="HTTP 503"):
        await gateway.embed(["x"], model="openai/fake-embed")


# -- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "path", "hint"),
    [
        ("ollama/llama3.2", "", "ollama pull llama3.2"),
        # litellm reports this one as an InternalServerError (HTTP 500): see _caused_by.
        ("openai/fake-model", "/v1", "Check that the server is running"),
    ],
)
async def test_an_unreachable_server_names_model_address_and_setting(
    records: Records, model: str, path: str, hint: str
) -> None:
    address = f"http://127.0.0.1:{closed_port()}{path}"
    gateway = LLMGateway(make_settings(model=model, llm_api_base=address), records)

    with pytest.raises(LLMUnreachable) as caught:
        await gateway.complete(HELLO)

    text = caught.value.text
    assert f"I couldn't reach the model {model} at {address}." in text
    assert "SWITCHBOARD_MODEL" in text
    assert hint in text
    assert (caught.value.model, caught.value.api_base) == (model, address)
    assert [(r.model, r.status) for r in records] == [(model, "error")]
    assert records[0].error


def test_the_default_address_is_named_when_none_is_configured() -> None:
    text = unreachable_text("openai/gpt-4o-mini", DEFAULT_ADDRESS)

    assert "at the provider's default address" in text


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streamed"])
async def test_a_hanging_server_times_out(fake: FakeLLM, records: Records, streaming: bool) -> None:
    fake.hang = True
    gateway = LLMGateway(make_settings(llm_api_base=fake.url, llm_timeout=0.3), records)

    async def ignore(text: str) -> None:
        pass

    with pytest.raises(LLMTimeout) as caught:
        await gateway.complete(HELLO, on_delta=ignore if streaming else None)

    assert "didn't answer within 0.3 seconds" in caught.value.text
    assert "SWITCHBOARD_LLM_TIMEOUT" in caught.value.text
    assert records[0].status == "error"
    assert records[0].latency_ms >= 300


async def test_a_refused_key_is_an_auth_error_and_same_provider_is_not_tried(
    gateway: LLMGateway, fake: FakeLLM, records: Records
) -> None:
    fake.script(FakeLLM.error(401, "Incorrect API key provided: sk-no-k***ured."))

    with pytest.raises(LLMAuthError) as caught:
        await gateway.complete(HELLO, fallbacks=["openai/other-model"])

    assert "OPENAI_API_KEY" in caught.value.text
    assert "openai/fake-model" in caught.value.text
    assert [r["model"] for r in fake.requests] == ["fake-model"]
    assert [r.status for r in records] == ["error"]


async def test_a_refused_key_falls_back_to_another_provider(
    gateway: LLMGateway, fake: FakeLLM, records: Records
) -> None:
    fake.fail_next(1, 401)

    done = await gateway.complete(HELLO, fallbacks=["hosted_vllm/local-model"])

    assert done.model == "hosted_vllm/local-model"
    assert [r.status for r in records] == ["error", "ok"]


async def test_a_missing_key_fails_before_any_request(
    records: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    gateway = LLMGateway(make_settings(model="openai/gpt-4o-mini"), records)

    with pytest.raises(LLMAuthError) as caught:
        await gateway.complete(HELLO)

    assert "needs an API key: set OPENAI_API_KEY" in caught.value.text
    assert caught.value.api_base is None
    assert [r.status for r in records] == ["error"]


async def test_a_server_error_falls_back_to_the_next_model(
    gateway: LLMGateway, fake: FakeLLM, records: Records
) -> None:
    fake.fail_next(1, 500)

    done = await gateway.complete(HELLO, model="openai/primary", fallbacks=["openai/backup"])

    assert done.text == "echo: hello there world"
    assert done.model == "openai/backup"
    assert [r["model"] for r in fake.requests] == ["primary", "backup"]
    assert [(r.model, r.status) for r in records] == [
        ("openai/primary", "error"),
        ("openai/backup", "ok"),
    ]
    assert records[0].error and "500" in records[0].error


async def test_when_every_model_fails_the_first_models_error_is_raised(
    gateway: LLMGateway, fake: FakeLLM, records: Records
) -> None:
    fake.fail_next(2, 429)

    with pytest.raises(LLMError) as caught:
        await gateway.complete(HELLO, model="openai/primary", fallbacks=["openai/backup"])

    assert caught.value.model == "openai/primary"
    assert "unavailable right now (HTTP 429)" in caught.value.text
    assert [r.status for r in records] == ["error", "error"]


async def test_a_rejected_request_is_not_retried_elsewhere(
    gateway: LLMGateway, fake: FakeLLM, records: Records
) -> None:
    fake.script(FakeLLM.error(400, "max_tokens is too large"))

    with pytest.raises(LLMError) as caught:
        await gateway.complete(HELLO, fallbacks=["openai/backup"])

    assert type(caught.value) is LLMError
    assert "max_tokens is too large" in caught.value.text
    assert len(records) == 1


async def test_an_unknown_model_says_so(gateway: LLMGateway, fake: FakeLLM) -> None:
    fake.script(FakeLLM.error(404, "The model `nope` does not exist"))

    with pytest.raises(LLMError, match="doesn't know the model openai/fake-model"):
        await gateway.complete(HELLO)


# -- prices -------------------------------------------------------------------------------


async def test_an_unknown_model_has_no_price(gateway: LLMGateway) -> None:
    assert gateway.price("openai/fake-model", 1000, 1000) is None
    assert (await gateway.complete(HELLO)).cost_usd is None


async def test_configured_prices_are_used(fake: FakeLLM, records: Records) -> None:
    prices = {"openai/fake-model": {"input": 1.0, "output": 2.0}}
    gateway = LLMGateway(make_settings(llm_api_base=fake.url, model_prices=prices), records)

    done = await gateway.complete(HELLO)

    assert done.cost_usd == pytest.approx((6 * 1.0 + 4 * 2.0) / 1e6)
    assert records[0].cost_usd == done.cost_usd


async def test_a_known_model_is_priced_from_the_bundled_map(
    gateway: LLMGateway, fake: FakeLLM
) -> None:
    done = await gateway.complete(HELLO, model="gpt-4o-mini")

    assert fake.requests[-1]["model"] == "gpt-4o-mini"
    assert done.cost_usd is not None and done.cost_usd > 0
    assert done.cost_usd == gateway.price("gpt-4o-mini", 6, 4)


# -- import cost --------------------------------------------------------------------------


def test_importing_the_module_does_not_import_litellm() -> None:
    probe = "import sys, bot.llm; print('litellm' in sys.modules)"
    root = Path(__file__).parents[2]
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
