"""People: their roles, their accounts on each channel, and what each of them may see.

A person is one ``users`` row with a role and one or more channel accounts, written
``CHANNEL:ID`` (``telegram:123``, ``terminal:alice``). The owner and admins see and manage
everything; a member sees what they made and what was made in the conversation they write
from. Whoever types in the machine's own terminal owns the installation, and so does the
shell (``switchboard …`` acts as the owner). Accounts are joined into one person only on
purpose (:func:`link`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, false, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot import audit, replies
from bot.core import Core
from bot.errors import UserFacingError
from bot.messages import ConversationRef
from bot.storage.models import (
    ChannelAccount,
    Message,
    PairingCode,
    PromptAction,
    PromptActionRun,
    User,
    WorkflowRun,
)
from bot.turns import Turn

OWNER, ADMIN, MEMBER = "owner", "admin", "member"
ROLES = (OWNER, ADMIN, MEMBER)  # highest first
STAFF = frozenset({OWNER, ADMIN})
# Accounts on these channels are the machine's own user: they own what runs on it.
OWNER_CHANNELS = frozenset({"terminal"})


@dataclass(frozen=True)
class Viewer:
    """Who asks, with their role, and the conversation they ask from."""

    user_id: int | None
    role: str
    conversation_id: int | None = None

    @property
    def staff(self) -> bool:
        return self.role in STAFF

    @property
    def actor(self) -> str:
        return "shell" if self.user_id is None else f"user:{self.user_id}"

    def sees(self, owner: Any, conversation: Any) -> ColumnElement[bool]:
        """A filter on rows made by ``owner`` in ``conversation``: all of them for the owner
        and admins; for a member, their own and those of the conversation they ask from."""
        if self.staff:
            return true()
        # Never "IS NULL": a person or conversation not known must not match the runs that
        # have none (a schedule's, a webhook's).
        mine = [owner == self.user_id] if self.user_id is not None else []
        here = [conversation == self.conversation_id] if self.conversation_id is not None else []
        return or_(false(), *mine, *here)


# The shell (`switchboard runs list`, `users …`): it runs on the owner's machine.
SHELL = Viewer(None, OWNER)


def held(role: str | None) -> set[str]:
    """The roles a person holds: their own, and an owner holds admin's too (a workflow
    limited to admins, an approval by ``role:admin``)."""
    if role is None:
        return set()
    return {OWNER, ADMIN} if role == OWNER else {role}


def role_for_new_account(channel: str) -> str:
    return OWNER if channel in OWNER_CHANNELS else MEMBER


async def viewer(core: Core, turn: Turn) -> Viewer:
    async with core.sessions() as session:
        role = await session.scalar(select(User.role).where(User.id == turn.user_id))
    return Viewer(turn.user_id, role or MEMBER, turn.conversation_id)


async def staff(core: Core, turn: Turn, command: str) -> Viewer:
    """The person asking for ``command``, when they are the owner or an admin; anyone else
    is refused (and the refusal audited)."""
    asking = await viewer(core, turn)
    if not asking.staff:
        await refuse(core, asking.actor, f"command:{command}", "not the owner or an admin")
        raise UserFacingError(replies.staff_only(command))
    return asking


async def refuse(core: Core, actor: str, subject: str, why: str) -> None:
    """Write a refusal to the audit log: who was refused (``user:7``, ``telegram:123``),
    what they reached for, and why."""
    await audit.record(
        core.autocommit,
        actor=actor,
        action="refused",
        subject=subject,
        status="refused",
        data={"why": why},
    )


def identity(channel: str, external_id: str) -> str:
    return f"{channel}:{external_id}"


async def identities(session: AsyncSession, user_ids: Iterable[int]) -> dict[int, list[str]]:
    """Each person's accounts as ``CHANNEL:ID``, in the order they were made."""
    rows = await session.execute(
        select(ChannelAccount.user_id, ChannelAccount.channel, ChannelAccount.external_id)
        .where(ChannelAccount.user_id.in_(list(user_ids)))
        .order_by(ChannelAccount.id)
    )
    found: dict[int, list[str]] = defaultdict(list)
    for user_id, channel, external_id in rows:
        found[user_id].append(identity(channel, external_id))
    return found


# --- the directory (`switchboard users …`) -------------------------------------------------


async def resolve(session: AsyncSession, who: str) -> User:
    """A person by user id (``7``) or by one of their accounts (``telegram:123``)."""
    person = await (session.get(User, int(who)) if who.isdigit() else _by_account(session, who))
    if person is None:
        raise UserFacingError(
            f"There is nobody called {who}: give a user id or an account as CHANNEL:ID, "
            "as `switchboard users list` shows them."
        )
    return person


async def _by_account(session: AsyncSession, account: str) -> User | None:
    channel, sep, external_id = account.partition(":")
    if not sep:
        return None
    owner = select(ChannelAccount.user_id).where(
        ChannelAccount.channel == channel, ChannelAccount.external_id == external_id
    )
    return await session.scalar(select(User).where(User.id == owner.scalar_subquery()))


async def listing(session: AsyncSession) -> list[str]:
    """One line per person: id, role, name, accounts, and whether they wait for approval."""
    people = (await session.scalars(select(User).order_by(User.id))).all()
    accounts = await identities(session, (p.id for p in people))
    waiting = await _waiting_codes(session)
    return [_line(p, accounts.get(p.id, []), waiting.get(p.id)) for p in people]


def _line(person: User, accounts: list[str], code: str | None) -> str:
    standing = f"  waiting for approval: {code}" if code else ""
    if person.approved_at is not None:
        standing = f"  approved {person.approved_at:%Y-%m-%d}"
    name = person.display_name or "(no name)"
    return f"#{person.id}  {person.role:<6}  {name}  {', '.join(accounts)}{standing}"


async def _waiting_codes(session: AsyncSession) -> dict[int, str]:
    rows = await session.execute(
        select(PairingCode.user_id, PairingCode.code).where(PairingCode.expires_at > func.now())
    )
    return {user_id: code for user_id, code in rows}


async def show(session: AsyncSession, who: str) -> str:
    """A person in full: role, accounts, approval, and what they have made."""
    person = await resolve(session, who)
    accounts = (await identities(session, [person.id])).get(person.id, [])
    code = (await _waiting_codes(session)).get(person.id)
    made = await _counts(session, person.id)
    approval = f"approved {person.approved_at:%Y-%m-%d %H:%M}" if person.approved_at else "no"
    return "\n".join(
        [
            f"#{person.id} {person.display_name or '(no name)'} — {person.role}",
            f"  accounts: {', '.join(accounts) or 'none'}",
            f"  approved: {approval}" + (f" (pairing code {code} waiting)" if code else ""),
            f"  messages: {made[0]}, runs: {made[1]}, prompt actions: {made[2]}",
            f"  since: {person.created_at:%Y-%m-%d %H:%M}",
        ]
    )


async def _counts(session: AsyncSession, user_id: int) -> tuple[int, int, int]:
    def count(column: Any) -> Any:
        return select(func.count()).where(column == user_id).scalar_subquery()

    row = (
        await session.execute(
            select(
                count(Message.author_id),
                count(WorkflowRun.started_by),
                count(PromptAction.owner_id),
            )
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


async def set_role(session: AsyncSession, who: str, role: str) -> str:
    if role not in ROLES:
        raise UserFacingError(f"'{role}' is not a role: use {', '.join(ROLES)}.")
    person = await resolve(session, who)
    if person.role == OWNER and role != OWNER and await _owners(session) <= 1:
        raise UserFacingError(
            f"#{person.id} is the only owner: make someone else owner first "
            "(`switchboard users role USER owner`)."
        )
    person.role = role
    return f"#{person.id} {person.display_name or who} is now {role}."


async def _owners(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).where(User.role == OWNER)) or 0)


async def link(session: AsyncSession, who: str, account: str) -> str:
    """Make ``account`` (``telegram:123``) one of ``who``'s. An account not seen yet is
    made for them; one that belongs to somebody else brings that person along: their
    accounts, messages, runs and prompt actions become ``who``'s."""
    person = await resolve(session, who)
    channel, sep, external_id = account.partition(":")
    if not (sep and channel and external_id):
        raise UserFacingError(
            f"'{account}' is not an account: write CHANNEL:ID, e.g. telegram:123."
        )
    found = await session.scalar(
        select(ChannelAccount).where(
            ChannelAccount.channel == channel, ChannelAccount.external_id == external_id
        )
    )
    if found is None:
        session.add(ChannelAccount(channel=channel, external_id=external_id, user_id=person.id))
        return f"Linked {account} to #{person.id}: what it writes now comes from them."
    if found.user_id == person.id:
        return f"{account} is already #{person.id}'s."
    merged = found.user_id
    await _merge(session, merged, into=person)
    return (
        f"Merged #{merged} into #{person.id}: {account} and the other accounts, messages, "
        f"runs and prompt actions of #{merged} are now #{person.id}'s."
    )


async def _merge(session: AsyncSession, old: int, *, into: User) -> None:
    gone = await session.get(User, old)
    assert gone is not None
    # Two actions of one name cannot share an owner: the one coming along gets a suffix.
    theirs = select(PromptAction.name).where(PromptAction.owner_id == into.id)
    await session.execute(
        update(PromptAction)
        .where(PromptAction.owner_id == old, PromptAction.name.in_(theirs))
        .values(name=func.left(PromptAction.name, 50) + f"-{old}")
    )
    for column in _BELONGINGS:
        await session.execute(update(column.class_).where(column == old).values({column: into.id}))
    await session.execute(delete(PairingCode).where(PairingCode.user_id == old))
    into.role = min(into.role, gone.role, key=ROLES.index)
    into.approved_at = into.approved_at or gone.approved_at
    await session.delete(gone)


_BELONGINGS = (
    ChannelAccount.user_id,
    Message.author_id,
    WorkflowRun.started_by,
    PromptAction.owner_id,
    PromptAction.created_by,
    PromptActionRun.user_id,
)


# What an ``allow:`` list (a workflow's, a persona's) may name, each a set of values.
ALLOW_KEYS = ("users", "roles", "channels", "chats", "workspaces")


async def outside(
    session: AsyncSession,
    allow: Mapping[str, Sequence[str]],
    user_id: int | None,
    ref: ConversationRef | None,
) -> str | None:
    """None when the person at ``ref`` meets every key of ``allow``: one of their accounts
    (``slack:U123``) in ``users``, a role they hold in ``roles``, the conversation's
    ``channels`` (``slack``), ``chats`` (``slack:C123``) or ``workspaces`` (``slack:T123``).
    Else the limits, as a person reads them."""
    if not allow:
        return None
    roles, accounts = await who(session, user_id)
    facts = {"users": accounts, "roles": roles, **_where(ref)}
    if all(facts.get(key, set()) & set(allowed) for key, allowed in allow.items()):
        return None
    return "; ".join(f"{key} {', '.join(values)}" for key, values in allow.items())


def _where(ref: ConversationRef | None) -> dict[str, set[str]]:
    if ref is None:
        return {}
    return {
        "channels": {ref.channel},
        "chats": {f"{ref.channel}:{ref.chat}"},
        "workspaces": {f"{ref.channel}:{ref.workspace}"} if ref.workspace else set(),
    }


async def who(session: AsyncSession, user_id: int | None) -> tuple[set[str], set[str]]:
    """A person's roles (an owner holds admin's too) and their accounts as CHANNEL:ID."""
    if user_id is None:
        return set(), set()
    role = await session.scalar(select(User.role).where(User.id == user_id))
    rows = await session.execute(
        select(ChannelAccount.channel, ChannelAccount.external_id).where(
            ChannelAccount.user_id == user_id
        )
    )
    return held(role), {f"{channel}:{external}" for channel, external in rows}
