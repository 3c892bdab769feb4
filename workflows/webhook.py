"""Start a workflow over HTTP: POST /hooks/NAME with the workflow's secret and JSON inputs.

Each workflow has its own secret, shown once when made (`switchboard workflows webhook NAME`);
only its SHA-256 is stored. A wrong secret and an unknown workflow get the same answer.
A delivery that carries a key (``Idempotency-Key``, or the header or body field the workflow
names) starts one run however often it comes; the body is held to 256 KB as it is read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from aiohttp import web
from sqlalchemy import select

from bot import people, replies
from bot.core import Core
from bot.health import outage
from bot.storage.models import Workflow
from bot.values import MAX_DEPTH, read_json
from workflows import runs, store
from workflows.errors import WorkflowError
from workflows.spec import Webhook

HEADER = "X-Switchboard-Secret"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_BODY = 256 * 1024
MAX_KEY = 200
TOO_LARGE = "The body is over 256 KB."
NOT_AN_OBJECT = (
    f"Send the inputs as a JSON object nested at most {MAX_DEPTH} levels deep, "
    'e.g. {"topic": "owls"}.'
)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> tuple[str, str]:
    """A fresh secret and the digest to store."""
    secret = secrets.token_urlsafe(32)
    return secret, digest(secret)


def routes(core: Core) -> list[web.RouteDef]:
    async def start(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            if not await _authorised(core, name, _secret(request)):
                raise _Refused(401, f"Wrong or missing {HEADER} for this workflow.")
            inputs = await _inputs(request)
            key = _delivery_key(request, inputs, await _webhook_of(core, name))
            run_id, workflow = await runs.start(
                core, name, inputs, trigger="webhook", idempotency_key=key
            )
        except (_Refused, WorkflowError) as exc:
            status = exc.status if isinstance(exc, _Refused) else 400
            # Anyone who finds the address may call it: every refusal is kept.
            await people.refuse(core, f"webhook:{request.remote}", f"workflow:{name}", exc.text)
            return _answer(status, error=exc.text)
        except Exception as exc:
            if outage(exc) is None:
                raise
            return _answer(503, error=replies.service_down_retry())  # senders deliver again
        return _answer(202, run_id=run_id, workflow=workflow, status="queued")

    return [web.post("/hooks/{name}", start)]


class _Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


def _secret(request: web.Request) -> str:
    bearer = request.headers.get("Authorization", "")
    return request.headers.get(HEADER) or bearer.removeprefix("Bearer ").strip()


async def _authorised(core: Core, name: str, secret: str) -> bool:
    async with core.sessions() as session:
        stored = await session.scalar(
            select(Workflow.webhook_secret_hash).where(Workflow.name == name, Workflow.enabled)
        )
    # Compare even when there is nothing stored, so timing tells nothing either.
    return bool(secret) and hmac.compare_digest(stored or "-" * 64, digest(secret))


async def _webhook_of(core: Core, name: str) -> Webhook:
    current = await store.current(core.autocommit, name)
    return store.spec_of(current.source).webhook if current is not None else Webhook()


async def _inputs(request: web.Request) -> dict[str, Any]:
    body = await _body(request)
    if not body.strip():
        return {}
    try:
        inputs = read_json(body)
    except ValueError:
        inputs = None
    if not isinstance(inputs, dict):
        raise _Refused(400, NOT_AN_OBJECT)
    return inputs


async def _body(request: web.Request) -> bytes:
    """The body as it arrives, held to MAX_BODY whether or not it said its length (a chunked
    body says nothing until it is read)."""
    if request.content_length and request.content_length > MAX_BODY:
        raise _Refused(413, TOO_LARGE)
    data = bytearray()
    while chunk := await request.content.read(64 * 1024):
        data += chunk
        if len(data) > MAX_BODY:
            raise _Refused(413, TOO_LARGE)
    return bytes(data)


def _delivery_key(request: web.Request, inputs: dict[str, Any], hook: Webhook) -> str | None:
    """What identifies this delivery: the workflow's own header or body field if it names
    one (it must then be there), else an ``Idempotency-Key`` header, else nothing."""
    if hook.key_header is not None:
        key, where = request.headers.get(hook.key_header), f"the {hook.key_header} header"
    elif hook.key_field is not None:
        key, where = inputs.get(hook.key_field), f"the body's {hook.key_field!r} field"
    else:
        key, where = request.headers.get(IDEMPOTENCY_HEADER), f"the {IDEMPOTENCY_HEADER} header"
        if key is None:
            return None
    if not isinstance(key, str | int) or not str(key).strip() or len(str(key)) > MAX_KEY:
        raise _Refused(
            400,
            f"This workflow needs a delivery key in {where} (text, at most {MAX_KEY} characters).",
        )
    return str(key).strip()


def _answer(http_status: int, **body: Any) -> web.Response:
    return web.json_response(body, status=http_status)
