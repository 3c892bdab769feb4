"""Who may talk at all: each channel's access policy, checked before anything else runs.

``open`` answers everyone. ``workspace`` answers the members of the workspace the bot is
installed in and pairs everyone else (an adapter writes the account of someone from another
workspace with that workspace: ``T0OTHER/U123``). ``allowlist`` answers the platform ids
listed for the channel (for email: addresses, or domains such as ``example.com``) and
refuses everyone else without a word. ``pairing`` gives an unknown person a short code and
nothing else until the owner approves it (``switchboard users approve CODE`` or
``/approve-user CODE``).

Owners, admins and approved people always pass. A refused message is kept (it was stored
before the platform's ack), marked ``refused`` and audited; no command runs for it and no
model sees it. One pairing reply per person per ``REPLY_INTERVAL``, and at most
``pairing_replies_per_minute`` of them overall, so a flood costs stored rows and nothing
more.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, text, update

from bot import audit, locks, outbox, people, replies
from bot.core import Core
from bot.errors import UserFacingError
from bot.messages import ConversationRef, OutgoingMessage
from bot.router import Command
from bot.storage.models import ChannelAccount, Conversation, PairingCode, User
from bot.turns import Reply, Turn

# No look-alikes: 0/O, 1/I/L, 2/Z, 5/S and 8/B are left out.
ALPHABET = "ACDEFGHJKMNPQRTUVWXY34679"
CODE_LENGTH = 8
CODE_TTL = timedelta(hours=1)
REPLY_INTERVAL = timedelta(minutes=10)


@dataclass(frozen=True)
class Sender:
    """The author of a turn as the gate sees them."""

    user_id: int | None
    role: str
    approved: bool
    accounts: tuple[str, ...]  # their external ids on the turn's channel

    @property
    def passes(self) -> bool:
        return self.role in people.STAFF or self.approved


async def gate(core: Core, turn: Turn) -> Reply | None:
    """None when the turn's author may talk on its channel; else the refusal to commit."""
    policy, allowed = core.settings.access(turn.ref.channel)
    if policy == "open":
        return None
    sender = await _sender(core, turn)
    if sender.passes or (policy == "workspace" and _member(sender)):
        return None
    if policy == "allowlist":
        if admits(turn.ref.channel, sender.accounts, allowed):
            return None
        return await _refuse(core, turn, sender, "not on the channel's allow list")
    return await _pair(core, turn, sender)


async def _sender(core: Core, turn: Turn) -> Sender:
    async with core.sessions() as session:
        person = await session.get(User, turn.user_id) if turn.user_id is not None else None
        accounts = await session.scalars(
            select(ChannelAccount.external_id).where(
                ChannelAccount.user_id == turn.user_id, ChannelAccount.channel == turn.ref.channel
            )
        )
        found = tuple(accounts)
    if person is None:
        return Sender(None, people.MEMBER, False, found)
    return Sender(person.id, person.role, person.approved_at is not None, found)


def _member(sender: Sender) -> bool:
    """A member of the installed workspace: an account not qualified with another one."""
    return any(FOREIGN not in account for account in sender.accounts)


FOREIGN = "/"  # separates another workspace from the account id: T0OTHER/U123


def admits(channel: str, accounts: tuple[str, ...], allowed: list[str]) -> bool:
    """Whether an allow list names one of the accounts (for email, case-insensitively, an
    address or its domain: ``example.com`` or ``@example.com``)."""
    if channel != "email":
        return bool(set(accounts) & set(allowed))
    entries = {entry.strip().lower().lstrip("@") for entry in allowed}
    for address in (account.lower() for account in accounts):
        if address in entries or address.rpartition("@")[2] in entries:
            return True
    return False


async def _refuse(core: Core, turn: Turn, sender: Sender, why: str, say: str = "") -> Reply:
    await people.refuse(core, _identity(turn, sender), f"message:{turn.message_id}", why)
    return Reply(say, refused=why)


def _identity(turn: Turn, sender: Sender) -> str:
    return people.identity(turn.ref.channel, sender.accounts[0] if sender.accounts else "?")


async def _pair(core: Core, turn: Turn, sender: Sender) -> Reply:
    if sender.user_id is None:
        return await _refuse(core, turn, sender, "the sender is not known")
    code = await _code_to_show(core, turn, sender)
    if code is None:
        return await _refuse(
            core, turn, sender, "waiting for pairing approval (code shown already)"
        )
    minutes = int(CODE_TTL.total_seconds() // 60)
    return await _refuse(
        core, turn, sender, "waiting for pairing approval", replies.pairing_code(code, minutes)
    )


# One statement: keep the person's live code (or make a new one when it expired), and take
# a reply slot when their last reply is old enough and the minute's replies are under the
# cap. ``now()`` is the transaction's start, so ``replied_at = now()`` says a slot was taken.
_ISSUE = text(
    """
    WITH recent AS (
        SELECT count(*) < :cap AS room FROM pairing_codes
         WHERE replied_at > now() - interval '1 minute'
    )
    INSERT INTO pairing_codes AS p
           (user_id, code, identity, conversation_id, expires_at, replied_at)
    SELECT :user_id, :code, :identity, :conversation_id, now() + CAST(:ttl AS interval),
           CASE WHEN recent.room THEN now() END
      FROM recent
    ON CONFLICT (user_id) DO UPDATE SET
        code = CASE WHEN p.expires_at <= now() THEN excluded.code ELSE p.code END,
        expires_at = CASE WHEN p.expires_at <= now() THEN excluded.expires_at
                          ELSE p.expires_at END,
        conversation_id = excluded.conversation_id,
        replied_at = CASE
            WHEN excluded.replied_at IS NOT NULL
             AND (p.expires_at <= now() OR p.replied_at IS NULL
                  OR p.replied_at <= now() - CAST(:interval AS interval))
            THEN now() ELSE p.replied_at END
    RETURNING p.code, p.replied_at IS NOT NULL AND p.replied_at = now() AS reply
    """
)


async def _code_to_show(core: Core, turn: Turn, sender: Sender) -> str | None:
    """The person's pairing code when it is time to show it (again); None when not."""
    values = {
        "user_id": sender.user_id,
        "code": _new_code(),
        "identity": _identity(turn, sender),
        "conversation_id": turn.conversation_id,
        "ttl": CODE_TTL,
        "interval": REPLY_INTERVAL,
        "cap": core.settings.pairing_replies_per_minute,
    }
    async with core.engine.begin() as conn:
        # Workers count the minute's replies one at a time, or together they would pass the cap.
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key, 0)"), {"key": locks.PAIRING})
        row = (await conn.execute(_ISSUE, values)).one()
    return str(row.code) if row.reply else None


def _new_code() -> str:
    return _shown("".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH)))


def _shown(bare: str) -> str:
    """Codes are kept as people read them: ABCD-EFGH."""
    return f"{bare[:4]}-{bare[4:]}" if len(bare) == CODE_LENGTH else bare


def typed(raw: str) -> str:
    """A code as someone typed it (any case, with or without the dash) as it is kept."""
    return _shown("".join(ch for ch in raw.upper() if ch.isalnum()))


# --- approval ------------------------------------------------------------------------------


async def approve(core: Core, raw_code: str, *, by: str) -> str:
    """Let in the person holding the code; they are welcomed where they asked for it."""
    code = typed(raw_code)
    async with core.sessions.begin() as session:
        found = (
            await session.execute(
                select(PairingCode, PairingCode.expires_at > func.now())
                .where(PairingCode.code == code)
                .with_for_update()
            )
        ).one_or_none()
        if found is None:
            raise UserFacingError(replies.no_such_code(code or raw_code))
        pairing, live = found
        if not live:
            raise UserFacingError(replies.code_expired(code, pairing.identity))
        await session.execute(
            update(User).where(User.id == pairing.user_id).values(approved_at=func.now())
        )
        await session.delete(pairing)
    await audit.record(
        core.autocommit,
        actor=by,
        action="approved",
        subject=f"user:{pairing.user_id}",
        status="ok",
        data={"identity": pairing.identity, "code": code},
    )
    await _welcome(core, pairing)
    return replies.approved(pairing.identity)


async def _welcome(core: Core, pairing: PairingCode) -> None:
    if pairing.conversation_id is None:
        return
    async with core.sessions() as session:
        ref = await session.scalar(
            select(Conversation.ref).where(Conversation.id == pairing.conversation_id)
        )
    if ref is None:
        return
    out = OutgoingMessage(
        ref=ConversationRef.from_dict(ref),
        text=replies.welcome(),
        idempotency_key=f"welcome:{pairing.user_id}:{pairing.code}",
    )
    await outbox.post(core, pairing.conversation_id, out)


async def approve_user_command(core: Core, turn: Turn, args: list[str]) -> Reply:
    viewer = await people.staff(core, turn, "/approve-user")
    return Reply(await approve(core, args[0], by=viewer.actor))


COMMANDS = (
    Command(
        "approve-user",
        "/approve-user CODE",
        "let in a person who sent you their pairing code (owner and admins)",
        approve_user_command,
        1,
        1,
    ),
)
