"""Start a workflow over HTTP: POST /hooks/NAME with the workflow's secret and JSON inputs.

Each workflow has its own secret, shown once when made (`switchboard workflows webhook NAME`);
only its SHA-256 is stored. A wrong secret and an unknown workflow get the same answer.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from aiohttp import web
from sqlalchemy import select

from bot.core import Core
from bot.storage.models import Workflow
from workflows import runs
from workflows.errors import WorkflowError

HEADER = "X-Switchboard-Secret"
MAX_BODY = 256 * 1024


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> tuple[str, str]:
    """A fresh secret and the digest to store."""
    secret = secrets.token_urlsafe(32)
    return secret, digest(secret)


def routes(core: Core) -> list[web.RouteDef]:
    async def start(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not await _authorised(core, name, _secret(request)):
            return _answer(401, error=f"Wrong or missing {HEADER} for this workflow.")
        inputs = await _inputs(request)
        if isinstance(inputs, web.Response):
            return inputs
        try:
            run_id, workflow = await runs.start(core, name, inputs, trigger="webhook")
        except WorkflowError as exc:
            return _answer(400, error=exc.text)
        return _answer(202, run_id=run_id, workflow=workflow, status="queued")

    return [web.post("/hooks/{name}", start)]


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


async def _inputs(request: web.Request) -> dict[str, Any] | web.Response:
    if request.content_length and request.content_length > MAX_BODY:
        return _answer(413, error="The body is over 256 KB.")
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        return _answer(400, error='Send the inputs as a JSON object, e.g. {"topic": "owls"}.')
    if not isinstance(body, dict):
        return _answer(400, error='Send the inputs as a JSON object, e.g. {"topic": "owls"}.')
    return body


def _answer(http_status: int, **body: Any) -> web.Response:
    return web.json_response(body, status=http_status)
