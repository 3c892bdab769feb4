"""Webhooks: one run per delivery key, the body limit on the bytes read, replies that have
somewhere to go."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy import func, select

from bot.app import Runtime
from bot.config import Settings
from bot.storage.models import AuditEvent, WorkflowRun, WorkflowStep
from tests.support import drain, serve
from workflows import store, webhook
from workflows.validate import WorkflowInvalid, load

ECHO = """
name: echo
inputs:
  text: {type: string, default: hi}
nodes:
  out: {type: template, text: "{{ text }}"}
"""

GITHUB = ECHO.replace("name: echo", "name: gh") + "webhook: {key_header: X-GitHub-Delivery}\n"
STRIPE = ECHO.replace("name: echo", "name: stripe").replace(
    "  text: {type: string, default: hi}", "  id: {type: string}\n  type: {type: string}"
)
STRIPE = STRIPE.replace("{{ text }}", "{{ type }}") + "webhook: {key_field: id}\n"

POSTS = ECHO.replace("name: echo", "name: post").replace(
    'out: {type: template, text: "{{ text }}"}', 'say: {type: reply, text: "{{ text }}"}'
)


async def _enable(runtime: Runtime, source: str) -> tuple[str, str]:
    async with runtime.core.sessions.begin() as session:
        saved = await store.save(session, source, origin="test")
        return saved.name, await store.rotate_webhook_secret(session, saved.name)


@pytest.fixture
async def hooks(runtime: Runtime) -> AsyncIterator[str]:
    async with serve(*webhook.routes(runtime.core)) as base:
        yield f"{base}/hooks"


async def _runs(runtime: Runtime) -> int:
    async with runtime.core.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(WorkflowRun)) or 0)


async def test_ten_concurrent_deliveries_with_one_key_start_one_run(
    runtime: Runtime, hooks: str
) -> None:
    name, secret = await _enable(runtime, ECHO)
    headers = {webhook.HEADER: secret, "Idempotency-Key": "delivery-1"}
    async with aiohttp.ClientSession() as client:

        async def deliver() -> tuple[int, dict[str, object]]:
            async with client.post(f"{hooks}/{name}", json={"text": "x"}, headers=headers) as r:
                return r.status, await r.json()

        answers = await asyncio.gather(*(deliver() for _ in range(10)))
        other = await client.post(
            f"{hooks}/{name}", json={}, headers={**headers, "Idempotency-Key": "delivery-2"}
        )
        assert other.status == 202

    assert {status for status, _ in answers} == {202}
    # One run for all ten (which id it got depends on which copy won the race).
    assert len({body["run_id"] for _, body in answers}) == 1
    assert await _runs(runtime) == 2
    await drain(runtime)


async def test_every_refused_delivery_is_audited(runtime: Runtime, hooks: str) -> None:
    name, secret = await _enable(runtime, ECHO)
    async with aiohttp.ClientSession() as client:
        wrong = await client.post(f"{hooks}/{name}", json={}, headers={webhook.HEADER: "guess"})
        bad = await client.post(f"{hooks}/{name}", data=b"[1]", headers={webhook.HEADER: secret})
        assert (wrong.status, bad.status) == (401, 400)
    async with runtime.core.sessions() as session:
        refusals = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.action == "refused").order_by(AuditEvent.id)
            )
        ).all()
    assert [(e.actor, e.subject, e.data["why"]) for e in refusals] == [
        (
            "webhook:127.0.0.1",
            "workflow:echo",
            "Wrong or missing X-Switchboard-Secret for this workflow.",
        ),
        ("webhook:127.0.0.1", "workflow:echo", webhook.NOT_AN_OBJECT),
    ]


async def test_a_workflow_names_its_own_delivery_header_or_body_field(
    runtime: Runtime, hooks: str
) -> None:
    gh, gh_secret = await _enable(runtime, GITHUB)
    stripe, stripe_secret = await _enable(runtime, STRIPE)
    event = {"id": "evt_1", "type": "invoice.paid"}
    async with aiohttp.ClientSession() as client:
        for _ in range(3):
            github = {webhook.HEADER: gh_secret, "X-GitHub-Delivery": "72d3162e"}
            assert (await client.post(f"{hooks}/{gh}", json={}, headers=github)).status == 202
            sent = await client.post(
                f"{hooks}/{stripe}", json=event, headers={webhook.HEADER: stripe_secret}
            )
            assert sent.status == 202
        missing = await client.post(
            f"{hooks}/{stripe}", json={"type": "x"}, headers={webhook.HEADER: stripe_secret}
        )
        assert missing.status == 400
        assert "delivery key" in (await missing.json())["error"]
    assert await _runs(runtime) == 2


async def test_a_body_nested_too_deeply_is_refused_plainly(runtime: Runtime, hooks: str) -> None:
    name, secret = await _enable(runtime, ECHO)
    async with aiohttp.ClientSession() as client:
        for depth in (200, 100_000):
            nested = b'{"text": "x", "deep": ' + b"[" * depth + b"]" * depth + b"}"
            sent = await client.post(
                f"{hooks}/{name}", data=nested, headers={webhook.HEADER: secret}
            )
            assert sent.status == 400
            assert (await sent.json())["error"] == (
                "Send the inputs as a JSON object nested at most 100 levels deep, "
                'e.g. {"topic": "owls"}.'
            )
    assert await _runs(runtime) == 0


async def test_a_chunked_body_is_held_to_the_limit(runtime: Runtime, hooks: str) -> None:
    name, secret = await _enable(runtime, ECHO)
    chunk = b'{"text": "' + b"a" * (64 * 1024)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(8):  # 512 KB, sent without a Content-Length
            yield chunk

    async with aiohttp.ClientSession() as client:
        sent = await client.post(
            f"{hooks}/{name}",
            data=body(),
            headers={webhook.HEADER: secret, "Content-Type": "application/json"},
        )
        assert sent.status == 413
        assert (await sent.json())["error"] == "The body is over 256 KB."
    assert await _runs(runtime) == 0


async def test_a_reply_with_nowhere_to_go_fails_the_run_saying_so(
    runtime: Runtime, hooks: str
) -> None:
    name, secret = await _enable(runtime, POSTS)
    async with aiohttp.ClientSession() as client:
        sent = await client.post(f"{hooks}/{name}", json={}, headers={webhook.HEADER: secret})
        assert sent.status == 202
    await drain(runtime)

    async with runtime.core.sessions() as session:
        run = await session.scalar(select(WorkflowRun))
        step = await session.scalar(select(WorkflowStep).where(WorkflowStep.node_id == "say"))
    assert run is not None and step is not None
    assert (run.status, step.status) == ("failed", "failed")
    assert step.error is not None and "no conversation to post in" in step.error
    assert "to: {channel, chat}" in step.error


def test_a_scheduled_workflow_must_say_where_its_replies_go() -> None:
    scheduled = POSTS + 'schedule: {cron: "0 9 * * *"}\n'
    with pytest.raises(WorkflowInvalid) as refused:
        load(scheduled, source="post.yaml")
    assert [str(p) for p in refused.value.problems] == [
        "post.yaml:6: nodes.say: a scheduled run has no conversation to answer in: "
        "say where to post with to: {channel, chat}"
    ]
    addressed = scheduled.replace(
        'text: "{{ text }}"}', 'text: "{{ text }}", to: {channel: web, chat: team}}'
    )
    assert load(addressed).name == "post"


async def test_making_a_webhook_says_which_replies_would_go_nowhere(
    runtime: Runtime, settings: Settings
) -> None:
    from tests.bot.test_cli import switchboard

    await _enable(runtime, POSTS)
    made = await switchboard(settings, "workflows", "webhook", "post")
    assert made.returncode == 0 and "X-Switchboard-Secret" in made.stdout
    assert "the reply node(s) say will fail: give them to: {channel, chat}" in made.stderr
