"""Workflows for real: stored with versions, started from a chat, run by workers, answered
in the same conversation, resumed and retried without repeating finished nodes."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import func, select, text, update

from bot import files
from bot.app import Runtime
from bot.conversation import receive
from bot.messages import ConversationRef
from bot.storage.models import AuditEvent, Workflow, WorkflowRun, WorkflowStep
from tests.fakes.llm_server import FakeLLM
from tests.support import REF, delivered, drain, in_browser, incoming, reply_to, say, serve
from workflows import runs, store
from workflows.errors import WorkflowError

DRAFT = """
name: draft
description: Draft with one model, critique with another, refine with the first.
command: /draft
inputs:
  topic: {type: string, description: what to write about}
nodes:
  write:    {type: llm, model: openai/writer-model, prompt: "Write about {{ topic }}"}
  critique: {type: llm, model: openai/critic-model, needs: [write], prompt: "Critique: {{ write }}"}
  refine:   {type: llm, model: openai/writer-model, needs: [critique],
             prompt: "Improve {{ write }} using {{ critique }}"}
  post:     {type: reply, needs: [refine], text: "{{ refine }}"}
"""


async def _save(runtime: Runtime, source: str) -> store.Saved:
    async with runtime.core.sessions.begin() as session:
        return await store.save(session, source, origin="test")


async def _steps(runtime: Runtime, run_id: int) -> dict[str, WorkflowStep]:
    async with runtime.core.sessions() as session:
        rows = await session.scalars(select(WorkflowStep).where(WorkflowStep.run_id == run_id))
        return {row.node_id: row for row in rows}


async def _run(runtime: Runtime, run_id: int) -> WorkflowRun:
    async with runtime.core.sessions() as session:
        row = await session.get(WorkflowRun, run_id)
    assert row is not None
    return row


async def test_saving_makes_versions_only_when_the_document_changes(runtime: Runtime) -> None:
    assert await _save(runtime, DRAFT) == store.Saved("draft", 1, True)
    assert await _save(runtime, DRAFT) == store.Saved("draft", 1, False)
    assert await _save(runtime, DRAFT.replace("Critique:", "Criticise:")) == store.Saved(
        "draft", 2, True
    )
    async with runtime.core.sessions() as session:
        assert [v.version for v in await store.history(session, "draft")] == [1, 2]
        change = await store.diff(session, "draft", 1, 2)
        with pytest.raises(WorkflowError, match="draft has no version 7"):
            await store.diff(session, "draft", 1, 7)
    assert (
        '-  critique: {type: llm, model: openai/critic-model, needs: [write], prompt: "Critique:'
        in change
    )
    assert "+  critique:" in change and "Criticise:" in change


async def test_an_invalid_document_is_refused_with_its_line(runtime: Runtime) -> None:
    with pytest.raises(WorkflowError) as caught:
        await _save(runtime, DRAFT.replace("{{ critique }}", "{{ critque }}"))
    assert (
        "test:11: nodes.refine.prompt: unknown variable 'critque' — did you mean 'critique'?"
        in caught.value.text
    )


async def test_a_chat_command_runs_a_multi_model_graph_and_answers_in_the_thread(
    runtime: Runtime, llm: FakeLLM
) -> None:
    await _save(runtime, DRAFT)
    started = await reply_to(runtime, "/run draft topic=owls")
    assert started.text == "Started run #1 of draft. I'll answer here when it's done."
    await drain(runtime)

    assert [r["model"] for r in llm.requests] == ["writer-model", "critic-model", "writer-model"]
    answer = (await delivered(runtime))[-1]
    assert answer.text.startswith("echo: Improve echo: Write about owls using echo: Critique:")
    run = await _run(runtime, 1)
    assert run.status == "succeeded" and run.trigger == "command"
    steps = await _steps(runtime, 1)
    assert steps["write"].input == {"prompt": "Write about owls", "model": "openai/writer-model"}
    assert steps["critique"].prompt_tokens > 0 and steps["critique"].status == "succeeded"
    assert run.prompt_tokens == sum(s.prompt_tokens for s in steps.values())


async def test_a_workflow_has_its_own_command(runtime: Runtime) -> None:
    await _save(runtime, DRAFT)
    started = await reply_to(runtime, "/draft topic=bees")
    assert started.text.startswith("Started run #1 of draft.")


async def test_bad_inputs_get_a_clear_refusal(runtime: Runtime) -> None:
    await _save(runtime, DRAFT)
    text = (await reply_to(runtime, "/run draft colour=red")).text
    assert text == (
        "unknown input 'colour'; missing input 'topic' (what to write about). draft takes: topic=…"
    )
    assert (
        "There is no workflow called 'drafts'. Did you mean draft?"
        in (await reply_to(runtime, "/run drafts")).text
    )


async def test_a_failed_run_says_where_and_resumes_from_there(
    runtime: Runtime, llm: FakeLLM
) -> None:
    await _save(runtime, DRAFT)
    llm.script("first draft", FakeLLM.error(401, "bad key"))
    await say(runtime, "/run draft topic=owls")
    await drain(runtime)

    failure = (await delivered(runtime))[-1].text
    assert failure.startswith("Run #1 of draft failed at node 'critique': ")
    assert failure.endswith("Fix the cause, then /run retry 1 to continue from there.")
    status = (await reply_to(runtime, "/run status 1")).text
    assert (
        "write: succeeded" in status
        and "critique: failed" in status
        and "refine: pending" in status
    )

    assert (await reply_to(runtime, "/run retry 1")).text == "Retrying run #1 from node 'critique'."
    await drain(runtime)
    assert (await _run(runtime, 1)).status == "succeeded"
    assert [r["model"] for r in llm.requests] == [
        "writer-model",
        "critic-model",
        "critic-model",
        "writer-model",
    ]  # the first draft was not written again
    assert (await _steps(runtime, 1))["write"].attempts == 1


async def test_a_run_resumes_after_its_last_finished_node(runtime: Runtime, llm: FakeLLM) -> None:
    """What a worker killed mid-run leaves behind: one node finished, one interrupted."""
    await _save(runtime, DRAFT)
    run_id, _ = await runs.start(runtime.core, "draft", {"topic": "owls"}, trigger="shell", ref=REF)
    async with runtime.core.sessions.begin() as session:
        session.add(WorkflowStep(run_id=run_id, node_id="write", status="succeeded", output="kept"))
        session.add(WorkflowStep(run_id=run_id, node_id="critique", status="running", attempts=1))
    await drain(runtime)

    assert [r["model"] for r in llm.requests] == ["critic-model", "writer-model"]
    steps = await _steps(runtime, run_id)
    assert steps["write"].output == "kept" and steps["critique"].attempts == 2
    assert (await delivered(runtime))[-1].text.startswith("echo: Improve kept using")


async def test_a_run_starts_the_version_current_at_that_moment(runtime: Runtime) -> None:
    """Starting remembers the workflow it read; a change since is noticed, never run stale."""
    await _save(runtime, DRAFT)
    first, _ = await runs.start(runtime.core, "draft", {"topic": "a"}, trigger="shell")
    await _save(runtime, DRAFT.replace("Critique:", "Criticise:"))
    second, _ = await runs.start(runtime.core, "draft", {"topic": "b"}, trigger="shell")
    versions = [(await _run(runtime, run_id)).version_id for run_id in (first, second)]
    async with runtime.core.sessions() as session:
        _, latest = await store.find(session, "draft")
    assert versions[0] != versions[1] == latest.id

    async with runtime.core.sessions.begin() as session:
        await session.execute(update(Workflow).values(enabled=False))
    with pytest.raises(WorkflowError, match="The workflow 'draft' is turned off"):
        await runs.start(runtime.core, "draft", {"topic": "c"}, trigger="shell")


async def test_cancel_stops_a_run(runtime: Runtime) -> None:
    await _save(runtime, DRAFT)
    run_id, _ = await runs.start(runtime.core, "draft", {"topic": "owls"}, trigger="shell")
    assert (await runs.cancel(runtime.core, run_id)).startswith("Cancelled run #1.")
    await drain(runtime)
    assert (await _run(runtime, 1)).status == "cancelled"
    assert (await reply_to(runtime, "/run cancel 1")).text == "Run #1 already cancelled."


@pytest.fixture
async def api() -> AsyncIterator[str]:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path, "q": request.query.get("q")})

    async with serve(web.get("/{tail:.*}", answer)) as url:
        yield url


FETCH = """
name: fetch
inputs:
  base: {type: string}
nodes:
  get: {type: http, url: "{{ base }}/items", query: {q: owls}}
output: "{{ get.body.q }} from {{ get.body.path }}"
"""


async def test_http_nodes_may_not_reach_internal_addresses(runtime: Runtime, api: str) -> None:
    await _save(runtime, FETCH)
    await say(runtime, f"/run fetch base={api}")
    await drain(runtime)

    failure = (await delivered(runtime))[-1].text
    assert "refusing to call 127.0.0.1 (127.0.0.1): it is an internal address." in failure
    assert "SWITCHBOARD_WORKFLOW_HTTP_ALLOW" in failure
    async with runtime.core.sessions() as session:
        [attempt] = await session.scalars(select(AuditEvent))
    assert (attempt.actor, attempt.action, attempt.status) == ("run:1/get", "http", "error")


async def test_http_nodes_reach_allowed_addresses(runtime: Runtime, api: str) -> None:
    runtime.core.settings.workflow_http_allow = ["127.0.0.0/8"]
    await _save(runtime, FETCH)
    await say(runtime, f"/run fetch base={api}")
    await drain(runtime)

    assert (await delivered(runtime))[-1].text == "Run #1 of fetch finished.\nowls from /items"
    async with runtime.core.sessions() as session:
        [call] = await session.scalars(select(AuditEvent))
    assert (call.actor, call.subject, call.status) == ("run:1/get", f"GET {api}/items", "ok")
    assert call.data["status"] == 200 and "owls" not in str(call.data)  # no query string


TRANSLATE = """
name: tr
command: /tr
inputs:
  text: {type: string, description: what to translate}
  to: {type: string, default: English, description: the language}
nodes:
  out: {type: template, text: "[{{ to }}] {{ text }}"}
"""


async def test_free_text_fills_the_first_open_input(runtime: Runtime) -> None:
    await _save(runtime, TRANSLATE)
    await say(runtime, "/tr to=German guten morgen allerseits")
    await drain(runtime)

    assert (await delivered(runtime))[-1].text.endswith("[German] guten morgen allerseits")


async def test_templates_are_listed_and_installed_from_the_chat(runtime: Runtime) -> None:
    listing = (await reply_to(runtime, "/templates")).text
    assert "summarize (/summarize) — " in listing and "translate (/translate) — " in listing

    installed = (await reply_to(runtime, "/templates install translate")).text
    assert installed.startswith("Installed translate (version 1) from the template.")
    path = runtime.core.settings.resolved_config_dir / "workflows" / "translate.yaml"
    assert path.is_file()
    assert (
        "There is no template called 'transl8'"
        in (await reply_to(runtime, "/templates install transl8")).text
    )
    member = await in_browser(runtime, "ann", "/templates install summarize")
    assert member == "Only the owner or an admin may use /templates install."


async def test_a_webhook_starts_a_run_with_the_right_secret_only(runtime: Runtime) -> None:
    from bot.conversation import receive
    from tests.support import serving
    from workflows import webhook

    await _save(runtime, TRANSLATE)
    async with runtime.core.sessions.begin() as session:
        secret = await store.rotate_webhook_secret(session, "tr")
    dispatch = functools.partial(receive, runtime.core)
    async with serving(runtime, dispatch, routes=webhook.routes(runtime.core)) as web_chat:
        url = f"{web_chat.url}/hooks/tr"
        async with aiohttp.ClientSession() as client:
            wrong = await client.post(url, json={"text": "x"}, headers={webhook.HEADER: "nope"})
            unknown = await client.post(
                f"{web_chat.url}/hooks/nope", headers={webhook.HEADER: secret}
            )
            bad = await client.post(url, json={"colour": 1}, headers={webhook.HEADER: secret})
            good = await client.post(
                url, json={"text": "hallo"}, headers={"Authorization": f"Bearer {secret}"}
            )
            assert (wrong.status, unknown.status, bad.status, good.status) == (401, 401, 400, 202)
            assert (await good.json()) == {"run_id": 1, "workflow": "tr", "status": "queued"}
            assert "unknown input 'colour'" in (await bad.json())["error"]
    await drain(runtime)
    assert (await _run(runtime, 1)).status == "succeeded"
    assert (await _run(runtime, 1)).trigger == "webhook"


async def test_a_restricted_workflow_refuses_others(runtime: Runtime) -> None:
    limited = TRANSLATE + "allow: {users: ['terminal:bob'], channels: [terminal]}\n"
    await _save(runtime, limited)

    refusal = (await reply_to(runtime, "/tr hello")).text
    assert refusal == "You may not run tr: it is limited to users terminal:bob; channels terminal."
    bob = ConversationRef(channel="terminal", chat="bob-chat")
    received = await receive(runtime.core, incoming("/tr hello", ref=bob, author="bob"))
    await drain(runtime)
    replies = await delivered(runtime, bob)
    assert replies[0].in_reply_to == received.message_id
    assert replies[0].text.startswith("Started run #1 of tr.")


PUBLISH = """
name: publish
inputs:
  text: {type: string, description: what to publish}
nodes:
  check: {type: approval, message: "Publish '{{ text }}'?", approvers: ["terminal:alice"]}
  go: {type: reply, needs: [check], when: "check.approved", text: "Published: {{ text }}"}
  hold: {type: reply, needs: [check], when: "not check.approved",
         text: "Not published ({{ check.note }})"}
"""


async def test_an_approval_waits_without_a_worker_and_resumes_on_a_decision(
    runtime: Runtime,
) -> None:
    await _save(runtime, PUBLISH)
    await say(runtime, "/run publish the news")
    await drain(runtime)
    asked = (await delivered(runtime))[-1].text
    assert asked.startswith("Run #1 asks for approval: Publish 'the news'?")
    assert "Reply /approve 1 or /reject 1 [reason] (terminal:alice may decide)." in asked
    assert (await _run(runtime, 1)).status == "waiting"

    bob = ConversationRef(channel="terminal", chat="bob-chat")
    await receive(runtime.core, incoming("/approve 1", ref=bob, author="bob"))
    await drain(runtime)
    assert (await delivered(runtime, bob))[-1].text == "Only terminal:alice may decide on run #1."

    assert (await reply_to(runtime, "/reject 1 not today")).text == (
        "Rejected run #1; it goes on now."
    )
    await drain(runtime)
    assert (await delivered(runtime))[-1].text == "Not published (not today)"
    assert (await _run(runtime, 1)).status == "succeeded"
    assert (await reply_to(runtime, "/approve 1")).text == "Run #1 is not waiting for an approval."


async def test_people_see_and_touch_only_their_own_runs(runtime: Runtime) -> None:
    await _save(runtime, PUBLISH.replace(', approvers: ["terminal:alice"]', ""))
    started = await in_browser(runtime, "ann", "/run publish the news")
    assert started.startswith("Started run #1 of publish.")

    for asked in ("/run status 1", "/run cancel 1", "/run retry 1", "/reject 1", "/run status 9"):
        number = asked.split()[-1]
        assert await in_browser(runtime, "bob", asked) == f"Run #{number} isn't one of yours."
    assert await in_browser(runtime, "bob", "/runs") == "No runs of yours yet."
    assert (await _run(runtime, 1)).status == "waiting"
    async with runtime.core.sessions() as session:
        refused = (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "refused"))
        ).all()
    assert [e.subject for e in refused] == ["run:1", "run:1", "run:1", "run:1", "run:9"]
    assert {e.actor for e in refused} == {"user:2"}  # bob: ann wrote first

    assert "#1 publish: waiting" in await in_browser(runtime, "ann", "/runs")
    assert "#1 publish: waiting" in (await reply_to(runtime, "/runs")).text
    assert (await reply_to(runtime, "/run status 1")).text.startswith("Run #1 of publish")
    assert await in_browser(runtime, "ann", "/approve 1") == "Approved run #1; it goes on now."


async def test_an_owner_decides_where_admins_may(runtime: Runtime) -> None:
    await _save(runtime, PUBLISH.replace('"terminal:alice"', '"role:admin"'))
    await in_browser(runtime, "ann", "/run publish the news")
    assert await in_browser(runtime, "ann", "/approve 1") == "Only role:admin may decide on run #1."
    assert (await reply_to(runtime, "/approve 1")).text == "Approved run #1; it goes on now."


async def test_an_approval_nobody_gives_in_time_fails_the_run(runtime: Runtime) -> None:
    await _save(runtime, PUBLISH.replace('approvers: ["terminal:alice"]', "timeout: 0.5"))
    await say(runtime, "/run publish the news")
    await drain(runtime)
    await asyncio.sleep(0.6)
    await drain(runtime)  # the timer job was deferred until the timeout

    run = await _run(runtime, 1)
    assert (run.status, run.failed_node) == ("failed", "check")
    assert "nobody approved or rejected in time" in (await delivered(runtime))[-1].text


STANDUP = """
name: standup-one
inputs:
  who: {type: string, default: "", description: unused}
nodes:
  ask: {type: input, question: "What did you do yesterday?", from: ["terminal:alice"]}
  sum: {type: reply, needs: [ask], text: "Noted: {{ ask.answer }} (from {{ ask.by }})"}
"""


async def test_an_input_node_asks_and_the_next_message_is_the_answer(
    runtime: Runtime, llm: FakeLLM
) -> None:
    await _save(runtime, STANDUP)
    await say(runtime, "/run standup-one")
    await drain(runtime)
    assert (await delivered(runtime))[-1].text == "What did you do yesterday?"

    thanks = await reply_to(runtime, "fixed the login bug")
    assert thanks.text == "Thanks, run #1 goes on with your answer."
    await drain(runtime)
    assert (await delivered(runtime))[-1].text == "Noted: fixed the login bug (from terminal:alice)"
    assert llm.requests == []  # the answer went to the run, not to the persona
    assert (await reply_to(runtime, "and now a normal chat")).text == "echo: and now a normal chat"


SECURED = """
name: secured
inputs:
  base: {type: string}
nodes:
  get: {type: http, url: "{{ base }}/private", auth: {secret: api_token}}
output: "{{ get.body.token_seen }}"
"""


async def test_http_auth_comes_from_the_encrypted_secret_store(
    runtime: Runtime, secured_api: str
) -> None:
    from bot import credentials
    from bot.storage.models import Secret

    runtime.core.settings.workflow_http_allow = ["127.0.0.0/8"]
    await _save(runtime, SECURED)
    await say(runtime, f"/run secured base={secured_api}")
    await drain(runtime)
    assert "There is no secret called 'api_token'" in (await delivered(runtime))[-1].text

    cipher = credentials.box(runtime.core.settings)
    async with runtime.core.sessions.begin() as session:
        await credentials.store(session, cipher, "api_token", "s3cr3t-value")
    async with runtime.core.sessions() as session:
        stored = await session.scalar(select(Secret.ciphertext))
    assert stored is not None and "s3cr3t" not in stored

    await say(runtime, f"/run secured base={secured_api}")
    await drain(runtime)
    assert (await delivered(runtime))[-1].text.endswith("Bearer s3cr3t-value")
    step = (await _steps(runtime, 2))["get"]
    assert "s3cr3t" not in str(step.input)  # the run's record names the secret, never its value


@pytest.fixture
async def secured_api() -> AsyncIterator[str]:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"token_seen": request.headers.get("Authorization")})

    async with serve(web.get("/private", answer)) as url:
        yield url


async def test_a_long_run_keeps_one_status_line_up_to_date(runtime: Runtime) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from adapters.local import LocalStream

    await _save(runtime, DRAFT)
    run_id, _ = await runs.start(runtime.core, "draft", {"topic": "owls"}, trigger="shell", ref=REF)
    async with runtime.core.sessions.begin() as session:  # as if it had been going a while
        await session.execute(
            update(WorkflowRun)
            .where(WorkflowRun.id == run_id)
            .values(status="running", started_at=datetime.now(UTC) - timedelta(minutes=2))
        )
    await drain(runtime)

    entries = await LocalStream(runtime.redis, "terminal").history("alice")
    statuses = [e.data for e in entries if e.kind == "status"]
    assert statuses and statuses[0]["key"] == f"run:{run_id}"
    assert statuses[0]["text"].startswith(f"Run #{run_id} of draft: 0/4 steps done, now write (")


async def test_files_a_run_makes_come_with_its_last_message(runtime: Runtime) -> None:
    await _save(
        runtime,
        "name: notes\ncommand: /notes\nnodes:\n"
        "  write: {type: file, path: out/notes.txt, content: remember the milk}\n"
        "output: wrote {{ write.size }} bytes\n",
    )
    await say(runtime, "/notes")
    await drain(runtime)

    done = (await delivered(runtime))[-1]
    assert done.text == "Run #1 of notes finished.\nwrote 17 bytes"
    [attached] = done.attachments
    assert (attached.filename, attached.content_type) == ("notes.txt", "text/plain")
    assert await files.content(runtime.core.engine, attached) == b"remember the milk"


async def test_a_json_document_indented_with_tabs_is_saved_and_runs(runtime: Runtime) -> None:
    """Validated, stored and run from one parser: JSON may indent with tabs, YAML may not."""
    source = '{\n\t"name": "tabbed",\n\t"nodes": {"hi": {"type": "template", "text": "ok"}}\n}\n'
    assert (await _save(runtime, source)).version == 1
    run_id, _ = await runs.start(runtime.core, "tabbed", {}, trigger="shell")
    await drain(runtime)
    assert (await _run(runtime, run_id)).output == "ok"


async def test_one_worker_at_a_time_advances_a_run(runtime: Runtime, llm: FakeLLM) -> None:
    """While a run is held, another job for it neither advances it nor is dropped, and the
    sweep leaves it alone; once free, it is advanced once."""
    await _save(runtime, DRAFT)
    run_id, _ = await runs.start(runtime.core, "draft", {"topic": "owls"}, trigger="shell", ref=REF)
    lost = (runtime.core.settings.queue_name, f"arq:job:{runs.run_job_id(run_id)}")
    await runtime.redis.delete(*lost)  # its job was lost
    async with runtime.core.sessions.begin() as session:
        await session.execute(
            update(WorkflowRun).values(
                status="running", created_at=func.now() - text("interval '1 hour'")
            )
        )
    holder = store.PostgresRunStore(runtime.core.autocommit)
    async with holder.claim(run_id) as held:
        assert held is not None
        assert await runs.sweep(runtime.core) == 0
        assert (await runs.advance(runtime.core, run_id)).status == "running"
        assert llm.requests == []
        busy = await runtime.redis.zrangebyscore(runtime.core.settings.queue_name, "-inf", "+inf")
        assert any(b"busy" in job for job in busy)
    assert await runs.sweep(runtime.core) == 1
    await drain(runtime)
    assert (await _run(runtime, run_id)).status == "succeeded"
    assert len(llm.requests) == 3
