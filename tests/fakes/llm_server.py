"""A local OpenAI-compatible server that litellm reaches over real HTTP.

Tests script it through plain attributes: ``latency`` delays every answer, ``hang`` never
answers, ``script()`` queues replies (text, a tool call, or ``FakeLLM.error(...)``) and
``requests`` keeps every JSON body received. Unscripted chat replies are
``"echo: <last user message>"``; token counts are whitespace-separated words.

Run it for benchmarks and demos: ``python -m tests.fakes.llm_server --port 8099``
(``--latency 1`` answers every request after a second, as a remote model might).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import random
import re
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

Json = dict[str, Any]


@dataclass(frozen=True)
class ErrorReply:
    status: int
    message: str


Reply = str | Json | ErrorReply  # a Json reply is a tool call: {"name", "arguments", "id"?}


class FakeLLM:
    def __init__(self, *, port: int = 0, dims: int = 384, latency: float = 0.0) -> None:
        self.port = port
        self.dims = dims
        self.models: list[str] = ["fake-model"]
        self.requests: list[Json] = []
        self._script: deque[Reply] = deque()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.reset()
        self.latency = latency

    # -- scripting -------------------------------------------------------------------------

    @staticmethod
    def error(status: int = 500, message: str = "the fake server failed on purpose") -> ErrorReply:
        return ErrorReply(status, message)

    def reset(self) -> None:
        """Back to defaults between tests; requests that hang are answered (with a 503)."""
        self.latency = 0.0
        self.chunk_delay = 0.0  # seconds between streamed chunks: a model that writes slowly
        self.hang = False
        self.stream_usage = True  # False: ignore stream_options.include_usage, as some servers do
        self.requests.clear()
        self._script.clear()
        self._release.set()
        self._release = asyncio.Event()

    def script(self, *replies: Reply) -> None:
        self._script.extend(replies)

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        self._script.extendleft(self.error(status) for _ in range(n))

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._release.set()  # answer hanging requests so shutdown does not wait on them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLLM:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- handlers --------------------------------------------------------------------------

    async def _receive(self, request: web.Request) -> tuple[Json, Reply | None]:
        body: Json = await request.json()
        self.requests.append(body)
        if self.hang:
            await self._release.wait()
            return body, self.error(503, "the fake server stopped hanging")
        await asyncio.sleep(self.latency)
        return body, self._script.popleft() if self._script else None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, reply = await self._receive(request)
        if isinstance(reply, ErrorReply):
            return _error_response(reply)
        reply = reply if reply is not None else f"echo: {_last_user_text(body['messages'])}"
        answer = _Answer(body, reply, with_usage=self.stream_usage)
        if body.get("stream"):
            return await answer.stream(request, self.chunk_delay)
        return web.json_response(answer.whole())

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self._script and isinstance(self._script[0], ErrorReply):
            return _error_response(self._script.popleft())  # type: ignore[arg-type]
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        b64 = body.get("encoding_format") == "base64"  # the OpenAI SDK's own default
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(self._vector(t), b64)}
            for i, t in enumerate(texts)
        ]
        tokens = sum(_words(t) for t in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response(
            {"object": "list", "data": data, "model": body["model"], "usage": usage}
        )

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    def _vector(self, text: str) -> list[float]:
        rng = random.Random(hashlib.sha256(text.encode()).digest())
        raw = [rng.gauss(0.0, 1.0) for _ in range(self.dims)]
        norm = math.sqrt(sum(x * x for x in raw))
        return [x / norm for x in raw]


class _Answer:
    """One chat completion, whole or as server-sent events, in OpenAI's shapes."""

    def __init__(self, body: Json, reply: str | Json, *, with_usage: bool = True) -> None:
        self.body = body
        self.with_usage = with_usage
        self.text = reply if isinstance(reply, str) else reply.get("content", "")
        self.tool = None if isinstance(reply, str) else _tool_call(reply)
        digest = hashlib.sha1(json.dumps(body).encode()).hexdigest()[:12]
        self.head = {
            "id": f"chatcmpl-{digest}",
            "created": int(time.time()),
            "model": body["model"],
        }
        generated = self.text + (self.tool["function"]["arguments"] if self.tool else "")
        prompt = sum(_words(m.get("content")) for m in body["messages"])
        self.usage = {
            "prompt_tokens": prompt,
            "completion_tokens": _words(generated),
            "total_tokens": prompt + _words(generated),
        }

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool else "stop"

    def _envelope(self, kind: str, choices: list[Json]) -> Json:
        return {**self.head, "object": kind, "choices": choices}

    def whole(self) -> Json:
        message: Json = {"role": "assistant", "content": self.text or None}
        if self.tool:
            message["tool_calls"] = [self.tool]
        choice = {"index": 0, "message": message, "finish_reason": self.finish_reason}
        return {**self._envelope("chat.completion", [choice]), "usage": self.usage}

    def _deltas(self) -> list[Json]:
        deltas: list[Json] = [{"content": piece} for piece in re.findall(r"\s*\S+", self.text)]
        if self.tool:
            fn = self.tool["function"]
            opening = {"index": 0, **self.tool, "function": {"name": fn["name"], "arguments": ""}}
            deltas.append({"tool_calls": [opening]})
            for part in re.findall(r".{1,8}", fn["arguments"]):
                deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
        return [{"role": "assistant", "content": ""}, *deltas]

    async def stream(self, request: web.Request, chunk_delay: float = 0.0) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunks = [self._chunk(delta, None) for delta in self._deltas()]
        chunks.append(self._chunk({}, self.finish_reason))
        if self.with_usage and (self.body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**self._envelope("chat.completion.chunk", []), "usage": self.usage})
        for chunk in chunks:
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(chunk_delay)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _chunk(self, delta: Json, finish_reason: str | None) -> Json:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return self._envelope("chat.completion.chunk", [choice])


def _tool_call(reply: Json) -> Json:
    arguments = reply.get("arguments", {})
    return {
        "id": reply.get("id", f"call_{reply['name']}"),
        "type": "function",
        "function": {
            "name": reply["name"],
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        },
    }


_ERROR_KINDS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def _error_response(error: ErrorReply) -> web.Response:
    # OpenAI's own shapes; note it reports a bad key as an "invalid_request_error".
    kind, code = _ERROR_KINDS.get(error.status, ("server_error", "server_error"))
    payload = {"error": {"message": error.message, "type": kind, "param": None, "code": code}}
    return web.json_response(payload, status=error.status)


def _words(content: Any) -> int:
    """Whitespace tokens in a message content (a string, or a list of typed parts)."""
    if isinstance(content, list):
        return sum(_words(part.get("text")) for part in content if isinstance(part, dict))
    return len(content.split()) if isinstance(content, str) else 0


def _last_user_text(messages: list[Json]) -> str:
    content = next((m.get("content") for m in reversed(messages) if m["role"] == "user"), "")
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _encode(vector: list[float], as_base64: bool) -> list[float] | str:
    if not as_base64:
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


async def _serve(port: int, latency: float) -> None:
    async with FakeLLM(port=port, latency=latency) as llm:
        print(llm.url, flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a fake OpenAI-compatible LLM API.")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.latency))


if __name__ == "__main__":
    main()
