"""The one door to language models: litellm behind a small gateway.

``LLMGateway`` picks the model and address from ``Settings``, streams when asked, counts
and prices tokens, reports every attempt to a recorder, and turns litellm's exceptions
into the ``LLMError`` family with a sentence a person can act on.

litellm is imported on first use: the import takes seconds and ~160 MB, so the CLI and
the inbound path, which import this module, never pay for it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot import replies
from bot.config import Settings
from bot.errors import LLMAuthError, LLMError, LLMTimeout, LLMUnreachable, chain

# litellm fetches its price map and Anthropic header table from GitHub unless told not to:
# slow offline, and a privacy leak for self-hosters. Set before anything imports it.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True")
# OpenAI and OpenAI-compatible servers through litellm's own HTTP handler, as it calls every
# other provider, not through the OpenAI SDK: the SDK walks each message of the request
# against every message type it declares, about 0.3 ms of CPU a message, so a call with a
# long history cost tens of milliseconds before it was sent (4 ms instead of 13 with 20
# messages). The same request goes out and the same errors come back (tests/bot/test_llm.py);
# set it to False to go through the SDK again.
os.environ.setdefault("EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER", "True")

DEFAULT_ADDRESS = "the provider's default address"
# Sent to an OpenAI-compatible server (SWITCHBOARD_LLM_API_BASE) when no key is configured:
# local servers ignore it, and the OpenAI client refuses to start without one.
PLACEHOLDER_KEY = "sk-no-key-configured"


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str = ""  # as the model wrote it; echo this back in the conversation


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    latency_ms: float
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class CallRecord:
    """One row of ``llm_calls``; the caller persists it."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None: no price known, never an invented one
    latency_ms: float
    status: str  # "ok" | "error"
    error: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)


class CallLog(Protocol):
    """Where calls are recorded: each as it starts (so a call cut off by a crash is still
    known) and again when it ends, failed or not."""

    async def started(self, model: str, context: Mapping[str, Any]) -> int | None: ...

    async def ended(self, call: int | None, record: CallRecord) -> None: ...


DeltaSink = Callable[[str], Awaitable[None]]
_Context = Mapping[str, Any] | None


# -- the gateway ----------------------------------------------------------------------------


class LLMGateway:
    """Chat completions, streaming and embeddings through litellm.

    Fallbacks: ``complete`` tries ``model`` and then each fallback in order. It moves on
    after a failure that another model may not share (unreachable, timeout, HTTP 429 or
    5xx), and after a refused credential only when the next model belongs to a different
    provider, whose key differs. It never moves on once streamed text has reached
    ``on_delta``: the person would see two answers spliced. Otherwise the first model's
    error is raised: that is the one the person configured. Every attempt, failed or not,
    goes to ``log``, first as it starts. Retries within one model are left to the job queue.
    """

    def __init__(self, settings: Settings, log: CallLog | None = None) -> None:
        self.settings = settings
        self._log = log
        self._counts = TokenCounts(_count_tokens)

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        fallbacks: Sequence[str] = (),
        temperature: float | None = None,
        max_tokens: int | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        on_delta: DeltaSink | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Completion:
        """The model's answer to ``messages``; with ``on_delta``, its text streams there too."""
        params = _drop_none(temperature=temperature, max_tokens=max_tokens)
        if tools:
            params["tools"] = [dict(tool) for tool in tools]
            # litellm 1.106 sends any call with tools through its MCP gateway, which
            # imports the optional `mcp` package and fails without it.
            params["_skip_mcp_handler"] = True
        sink = _CountingSink(on_delta) if on_delta else None
        candidates = [model or self.settings.model, *fallbacks]
        first: _Failed | None = None
        for name, following in zip(candidates, [*candidates[1:], None], strict=True):
            try:
                return await self._complete_once(name, messages, params, sink, context)
            except _Failed as failed:
                first = first or failed
                if (
                    following is None
                    or (sink and sink.count)
                    or not self._may_fall_back(failed, name, following)
                ):
                    break
        assert first is not None
        raise first.error from first.__cause__

    async def embed(
        self, texts: Sequence[str], *, model: str, context: Mapping[str, Any] | None = None
    ) -> list[list[float]]:
        if not texts:
            return []
        started, call = time.perf_counter(), await self._begin(model, context)
        try:
            self._check_credentials(model)
            response = await _litellm().aembedding(
                model=model, input=list(texts), **self._connection(model)
            )
        except Exception as exc:
            failed = await self._failed(exc, model, started, context, call)
            raise failed.error from exc
        tokens = _usage(getattr(response, "usage", None))
        await self._ok(model, tokens, 0, started, context, call)
        items = sorted(response.data, key=lambda item: _get(item, "index"))
        return [list(_get(item, "embedding")) for item in items]

    def count_tokens(self, messages: Sequence[Mapping[str, Any]], model: str) -> int:
        return self._counts(messages, model)

    def price(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for a call: configured prices first, then litellm's bundled map, else None."""
        configured = self.settings.model_prices.get(model)
        if configured is not None:
            per_million = prompt_tokens * configured.get("input", 0.0)
            return (per_million + completion_tokens * configured.get("output", 0.0)) / 1e6
        return _bundled_price(model, prompt_tokens, completion_tokens)

    # -- one attempt ------------------------------------------------------------------------

    async def _complete_once(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        params: dict[str, Any],
        on_delta: DeltaSink | None,
        context: Mapping[str, Any] | None,
    ) -> Completion:
        request = {"model": model, "messages": [dict(m) for m in messages], **params}
        request.update(self._connection(model))
        started, call = time.perf_counter(), await self._begin(model, context)
        try:
            self._check_credentials(model)
            answer = await (_stream(request, on_delta) if on_delta else _call(request))
        except _SinkError as sink:  # the caller's own failure, not the model's: no fallback
            detail = f"stopped: on_delta raised {type(sink.original).__name__}"
            await self._send(call, _error_record(model, started, detail, context))
            raise sink.original from None
        except Exception as exc:
            raise await self._failed(exc, model, started, context, call) from exc
        prompt, generated = answer.prompt_tokens, answer.completion_tokens
        record = await self._ok(model, prompt, generated, started, context, call)
        return Completion(
            text=answer.text,
            model=model,
            prompt_tokens=prompt,
            completion_tokens=generated,
            cost_usd=record.cost_usd,
            latency_ms=record.latency_ms,
            tool_calls=answer.tool_calls,
        )

    def _connection(self, model: str) -> dict[str, Any]:
        options: dict[str, Any] = {"timeout": self.settings.llm_timeout, "max_retries": 0}
        if self.settings.llm_api_base:
            options["api_base"] = self.settings.llm_api_base
            if _missing_keys(model):
                options["api_key"] = PLACEHOLDER_KEY
        return options

    def _check_credentials(self, model: str) -> None:
        """Fail before any network traffic when the provider's key is not set.

        litellm reports a missing key differently per provider (a 500 for OpenAI, a
        keyless request for some), so it is checked here, the same way for all.
        """
        missing = _missing_keys(model)
        if missing and not self.settings.llm_api_base:
            raise _MissingKey(missing)

    async def _begin(self, model: str, context: _Context) -> int | None:
        return (
            await self._log.started(model, dict(context or {})) if self._log is not None else None
        )

    async def _ok(
        self,
        model: str,
        prompt: int,
        generated: int,
        started: float,
        context: _Context,
        call: int | None,
    ) -> CallRecord:
        record = CallRecord(
            model=model,
            prompt_tokens=prompt,
            completion_tokens=generated,
            cost_usd=self.price(model, prompt, generated),
            latency_ms=_elapsed_ms(started),
            status="ok",
            context=dict(context or {}),
        )
        await self._send(call, record)
        return record

    async def _failed(
        self, exc: Exception, model: str, started: float, context: _Context, call: int | None
    ) -> _Failed:
        failed = self._translate(exc, model)
        detail = _describe(failed.error, exc)
        await self._send(call, _error_record(model, started, detail, context))
        return failed

    async def _send(self, call: int | None, record: CallRecord) -> None:
        if self._log is not None:
            await self._log.ended(call, record)

    # -- errors -----------------------------------------------------------------------------

    def _translate(self, exc: Exception, model: str) -> _Failed:
        """litellm's exception as our own; the boolean says whether another model may help."""
        litellm = _litellm()
        base = self.settings.effective_api_base(model)
        address = base or DEFAULT_ADDRESS
        status = getattr(exc, "status_code", None)
        if isinstance(exc, _MissingKey):
            text = replies.missing_key_text(model, exc.names)
            return _Failed(LLMAuthError(text, model=model, api_base=base), transient=False)
        if _caused_by(exc, (litellm.Timeout, *_timeout_errors())):
            text = replies.timeout_text(model, address, self.settings.llm_timeout)
            return _Failed(LLMTimeout(text, model=model, api_base=base), transient=True)
        if _caused_by(exc, _connection_errors()):
            text = replies.unreachable_text(model, address)
            return _Failed(LLMUnreachable(text, model=model, api_base=base), transient=True)
        if status == 401 or isinstance(exc, litellm.AuthenticationError):
            text = replies.auth_text(model, address, _key_variable(model))
            return _Failed(LLMAuthError(text, model=model, api_base=base), transient=False)
        text = _other_text(model, address, status, exc)
        busy = status is not None and (status == 429 or status >= 500)
        return _Failed(LLMError(text, model=model, api_base=base), transient=busy)

    def _may_fall_back(self, failed: _Failed, model: str, following: str) -> bool:
        if isinstance(failed.error, LLMAuthError):
            return _provider(model) != _provider(following)
        return failed.transient


Counter = Callable[[list[dict[str, Any]], str], int]
_CountKey = tuple[str, tuple[tuple[str, bytes], ...]]


class TokenCounts:
    """Token counts of text messages, each list counted once per model and remembered.

    Every turn counts the conversation's history again to fit it in the budget, one
    message a call, and litellm's counter costs about 0.2 ms a call (a remembered count,
    2 µs): the history's messages were counted on the turns before. Keyed by a digest of
    the text, not the text, so the memory a count takes does not grow with the message;
    the least recently used are forgotten beyond ``size``. Messages with more than a role
    and a text (tool calls, parts) are counted each time.
    """

    def __init__(self, count: Counter, size: int = 8192) -> None:
        self._count = count
        self._size = size
        self._known: OrderedDict[_CountKey, int] = OrderedDict()

    def __call__(self, messages: Sequence[Mapping[str, Any]], model: str) -> int:
        key = _count_key(messages, model)
        if key is None:
            return self._count([dict(m) for m in messages], model)
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = self._count([dict(m) for m in messages], model)
            if len(self._known) > self._size:
                self._known.popitem(last=False)
        else:
            self._known.move_to_end(key)
        return found


def _count_key(messages: Sequence[Mapping[str, Any]], model: str) -> _CountKey | None:
    parts = []
    for message in messages:
        content, role = message.get("content"), message.get("role")
        if len(message) != 2 or not isinstance(content, str) or not isinstance(role, str):
            return None
        digest = hashlib.blake2b(content.encode("utf-8", "surrogatepass"), digest_size=16)
        parts.append((role, digest.digest()))
    return model, tuple(parts)


def _count_tokens(messages: list[dict[str, Any]], model: str) -> int:
    return int(_litellm().token_counter(model=model, messages=messages))


class _Failed(Exception):
    def __init__(self, error: LLMError, transient: bool) -> None:
        super().__init__(error.text)
        self.error = error
        self.transient = transient


class _CountingSink:
    """The caller's ``on_delta``, counting what got through (see the fallback rule)."""

    def __init__(self, sink: DeltaSink) -> None:
        self.sink = sink
        self.count = 0

    async def __call__(self, text: str) -> None:
        await self.sink(text)
        self.count += 1


class _MissingKey(Exception):
    def __init__(self, names: list[str]) -> None:
        super().__init__(f"missing {', '.join(names)}")
        self.names = names


class _SinkError(Exception):
    """Carries an exception raised by the caller's ``on_delta`` past the error mapping."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


# -- litellm plumbing -------------------------------------------------------------------


def load() -> None:
    """Import and set up litellm now (seconds of work: Core.load_llm runs this in a thread)."""
    _litellm()


@functools.cache
def _litellm() -> Any:
    litellm: Any = importlib.import_module("litellm")
    litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners on errors
    litellm.telemetry = False  # gone in 1.106; older releases phoned home unless False
    litellm.drop_params = True  # e.g. temperature on models that refuse it: drop, don't fail
    # Retrying is the fallback chain's and the job queue's business. Embeddings read this
    # default because litellm 1.106 turns max_retries=0 into `0 or DEFAULT_MAX_RETRIES`.
    litellm.DEFAULT_MAX_RETRIES = 0
    _quiet_logging()
    return litellm


def _quiet_logging() -> None:
    """litellm logs every call at INFO through handlers of its own: leave ours in charge.

    Its records propagate to the application's handlers; ``LITELLM_LOG=DEBUG`` still
    turns its detail on for debugging.
    """
    level = getattr(logging, os.environ.get("LITELLM_LOG", "WARNING").upper(), logging.WARNING)
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(level)


@dataclass(frozen=True)
class _Answer:
    text: str
    tool_calls: tuple[ToolCall, ...]
    prompt_tokens: int
    completion_tokens: int


async def _call(request: dict[str, Any]) -> _Answer:
    return _answer(await _litellm().acompletion(**request))


async def _stream(request: dict[str, Any], on_delta: DeltaSink) -> _Answer:
    litellm = _litellm()
    stream = await litellm.acompletion(
        **request, stream=True, stream_options={"include_usage": True}
    )
    chunks, pieces, usage, calls = [], [], None, False
    async for chunk in stream:
        chunks.append(chunk)
        usage = getattr(chunk, "usage", None) or usage
        delta = chunk.choices[0].delta if chunk.choices else None
        calls = calls or bool(getattr(delta, "tool_calls", None))
        if delta is not None and delta.content:
            pieces.append(delta.content)
            await _forward(delta.content, on_delta)
    if calls or usage is None:
        # Rebuilds tool calls from their pieces, and counts tokens itself when no usage came.
        return _answer(litellm.stream_chunk_builder(chunks, messages=request["messages"]))
    # Text only, usage in the last chunk (litellm's own, when the server sent none): the
    # text is the pieces joined, without building the whole response again (~2 ms).
    return _Answer("".join(pieces), (), _usage(usage), _usage(usage, "completion_tokens"))


def _answer(response: Any) -> _Answer:
    choices = getattr(response, "choices", None)  # None: the stream ended before any chunk
    message = choices[0].message if choices else None
    usage = getattr(response, "usage", None)
    return _Answer(
        (message.content if message else None) or "",
        _tool_calls(message),
        _usage(usage),
        _usage(usage, "completion_tokens"),
    )


async def _forward(text: str, on_delta: DeltaSink) -> None:
    try:
        await on_delta(text)
    except Exception as exc:
        raise _SinkError(exc) from exc


def _tool_calls(message: Any) -> tuple[ToolCall, ...]:
    return tuple(_tool_call(call) for call in getattr(message, "tool_calls", None) or [])


def _tool_call(call: Any) -> ToolCall:
    raw = call.function.arguments or ""
    return ToolCall(call.id, call.function.name, _arguments(raw), raw)


def _arguments(raw: str | None) -> dict[str, Any]:
    """Parsed tool arguments; {} when the model wrote no JSON object (``raw`` keeps it)."""
    try:
        parsed = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _bundled_price(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    if model in _UNPRICED:
        return None
    try:
        prompt_cost, completion_cost = _litellm().cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    except Exception:  # litellm raises for every model missing from its map
        # The map is bundled and never changes while running: no need to search it again.
        _UNPRICED.add(model)
        return None
    return float(prompt_cost) + float(completion_cost)


_UNPRICED: set[str] = set()


def _provider(model: str) -> str:
    try:
        return str(_litellm().get_llm_provider(model)[1])
    except Exception:  # an unknown provider: the model prefix is the best guess
        return model.split("/", 1)[0]


def _key_variable(model: str) -> str:
    return f"{_provider(model).upper()}_API_KEY"


def _missing_keys(model: str) -> list[str]:
    """The provider's API-key variables, when none of them is set."""
    found = _litellm().validate_environment(model=model)
    if found.get("keys_in_environment"):
        return []
    return [name for name in found.get("missing_keys", []) if name.endswith("_API_KEY")]


def _other_text(model: str, address: str, status: int | None, exc: Exception) -> str:
    if status == 404:
        return replies.not_found_text(model, address)
    if status is not None and (status == 429 or status >= 500):
        return replies.unavailable_text(model, address, status)
    return replies.failure_text(model, address, _provider_message(exc))


def _describe(error: LLMError, exc: Exception) -> str:
    """A short line for the call log, e.g. ``LLMError HTTP 500: overloaded``."""
    status = getattr(exc, "status_code", None)
    shown = f" HTTP {status}" if status and type(error) in (LLMError, LLMAuthError) else ""
    return f"{type(error).__name__}{shown}: {_provider_message(exc)}"[:500]


def _provider_message(exc: Exception) -> str:
    """The provider's own words, without litellm's class-name prefixes."""
    message = str(getattr(exc, "message", exc)).split(" - ", 1)[-1].strip()
    return (message[:300].rstrip(".") + ".") if message else "an unexpected error."


def _timeout_errors() -> tuple[type[BaseException], ...]:
    httpx = importlib.import_module("httpx")
    return (httpx.TimeoutException, TimeoutError)


def _connection_errors() -> tuple[type[BaseException], ...]:
    httpx = importlib.import_module("httpx")
    return (httpx.ConnectError, ConnectionError, socket.gaierror)


def _caused_by(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """True when ``exc`` or anything in its cause chain is one of ``kinds``.

    litellm wraps transport failures unevenly: with the OpenAI client a refused
    connection surfaces as an InternalServerError (status 500) whose chain holds the
    ConnectError, so the chain, not the outer class, says what happened.
    """
    return any(isinstance(link, kinds) for link in chain(exc))


def _error_record(model: str, started: float, detail: str, context: _Context) -> CallRecord:
    return CallRecord(model, 0, 0, None, _elapsed_ms(started), "error", detail, dict(context or {}))


def _usage(usage: Any, name: str = "prompt_tokens") -> int:
    return int(getattr(usage, name, 0) or 0)


def _get(item: Any, name: str) -> Any:
    return item[name] if isinstance(item, Mapping) else getattr(item, name)


def _drop_none(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
