"""People: the terminal user owns the installation, roles are given by id or account, and
accounts join one person only when someone links them."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot import people
from bot.app import Runtime
from bot.errors import UserFacingError
from bot.storage.models import ChannelAccount, Message, PromptAction, User
from tests.bot.test_access import answers, tell
from tests.support import drain, in_browser, reply_to


async def _listing(runtime: Runtime) -> list[str]:
    async with runtime.core.sessions() as session:
        return await people.listing(session)


async def test_the_terminal_user_owns_the_installation_and_others_are_members(
    runtime: Runtime,
) -> None:
    await reply_to(runtime, "hello")
    await in_browser(runtime, "ann", "hello")

    assert await _listing(runtime) == [
        "#1  owner   Alice  terminal:alice",
        "#2  member  Web:Ann  web:web:ann",
    ]


async def test_roles_are_given_by_id_or_account_and_an_owner_always_remains(
    runtime: Runtime,
) -> None:
    await reply_to(runtime, "hello")
    await in_browser(runtime, "ann", "hello")

    async with runtime.core.sessions.begin() as session:
        assert await people.set_role(session, "web:web:ann", "admin") == "#2 Web:Ann is now admin."
        with pytest.raises(UserFacingError, match="'boss' is not a role: use owner, admin"):
            await people.set_role(session, "2", "boss")
        with pytest.raises(UserFacingError, match="#1 is the only owner"):
            await people.set_role(session, "terminal:alice", "member")
        with pytest.raises(UserFacingError, match="There is nobody called web:nope"):
            await people.show(session, "web:nope")
    assert await in_browser(runtime, "ann", "/runs") == "No runs yet."  # an admin sees all
    assert await in_browser(runtime, "ann", "/approve-user ABCD-EFGH") == (
        "No pairing code ABCD-EFGH is waiting. Check it letter by letter; "
        "`switchboard users list` shows the codes waiting for approval."
    )


async def test_linking_an_account_makes_its_messages_theirs_and_merges_on_purpose(
    runtime: Runtime,
) -> None:
    await reply_to(runtime, "hello")
    await in_browser(runtime, "ann", '/t save mine "Ann: {{ text }}"')
    await in_browser(runtime, "bob", '/t save mine "Bob: {{ text }}"')

    async with runtime.core.sessions.begin() as session:
        said = await people.link(session, "web:web:ann", "web:web:bob")
    assert said.startswith("Merged #3 into #2: web:web:bob and the other accounts")
    async with runtime.core.sessions() as session:
        assert await session.get(User, 3) is None
        authors = set(
            await session.scalars(select(Message.author_id).where(Message.direction == "in"))
        )
        actions = await session.execute(select(PromptAction.name, PromptAction.owner_id))
        assert sorted(actions.all()) == [("mine", 2), ("mine-3", 2)]
    assert authors == {1, 2}
    assert "web:web:ann, web:web:bob" in (await _listing(runtime))[1]

    async with runtime.core.sessions.begin() as session:
        said = await people.link(session, "1", "telegram:999")
    assert said == "Linked telegram:999 to #1: what it writes now comes from them."
    owner_on_telegram = await tell(runtime, "it's me, on my phone", who="999")
    await drain(runtime)
    assert await answers(runtime, owner_on_telegram) == ["echo: it's me, on my phone"]
    async with runtime.core.sessions() as session:
        account = await session.scalar(
            select(ChannelAccount).where(ChannelAccount.external_id == "999")
        )
    assert account is not None and account.user_id == 1


async def test_a_member_nobody_knows_sees_no_run_that_has_no_starter(runtime: Runtime) -> None:
    from workflows import runs, store

    async with runtime.core.sessions.begin() as session:
        await store.save(
            session, "name: noop\nnodes:\n  a: {type: template, text: x}\n", origin="test"
        )
    await runs.start(runtime.core, "noop", {}, trigger="shell")  # no starter, no conversation

    assert await runs.recent(runtime.core, people.Viewer(None, people.MEMBER)) == []
    assert len(await runs.recent(runtime.core, people.SHELL)) == 1
