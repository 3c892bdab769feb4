"""The tables, in one metadata. Later features add theirs here and a migration beside them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar = {dict[str, Any]: JSONB, list[Any]: JSONB}


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(32), default="member", server_default="member")
    # When the owner let this person in (a pairing code approved); channels with the
    # ``pairing`` policy answer only approved people, owners and admins.
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()


class ChannelAccount(Base):
    """A platform identity (a Slack user, a Telegram account, an email address) → a user."""

    __tablename__ = "channel_accounts"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = _now()


class Persona(Base):
    __tablename__ = "personas"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str | None] = mapped_column(String(200))
    fallbacks: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    temperature: Mapped[float | None] = mapped_column(Float)
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    greeting: Mapped[str] = mapped_column(Text, default="")
    tools: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    # Who may talk to it (bot.people.outside): {"users": ["slack:U123"], "chats": [...]}.
    allow: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    source: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = _now()


class Conversation(Base):
    """One thread of talk on one channel; the address replies go back to."""

    __tablename__ = "conversations"
    __table_args__ = (UniqueConstraint("channel", "workspace", "chat", "thread"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    workspace: Mapped[str] = mapped_column(String(255), default="")
    chat: Mapped[str] = mapped_column(String(255))
    thread: Mapped[str] = mapped_column(String(255), default="")
    ref: Mapped[dict[str, Any]] = mapped_column(default=dict)
    persona_id: Mapped[int | None] = mapped_column(ForeignKey("personas.id", ondelete="SET NULL"))
    # /new moves this forward: older messages stay stored but leave the model's context.
    context_since: Mapped[datetime] = _now()
    created_at: Mapped[datetime] = _now()


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("channel", "external_id"),
        Index("ix_messages_conversation_created", "conversation_id", "id"),
        Index(
            "ix_messages_pending",
            "created_at",
            postgresql_where=text("direction = 'in' AND status = 'received'"),
        ),
        Index(
            "ix_messages_failed",
            "id",
            postgresql_where=text("direction = 'in' AND status = 'failed'"),
        ),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str | None] = mapped_column(String(255))
    direction: Mapped[str] = mapped_column(String(3))  # "in" | "out"
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    persona_id: Mapped[int | None] = mapped_column(ForeignKey("personas.id", ondelete="SET NULL"))
    text: Mapped[str] = mapped_column(Text, default="")
    attachments: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    # Where to answer this very message (email threading differs per message).
    ref: Mapped[dict[str, Any] | None] = mapped_column()
    # inbound: received → handled | failed | refused (the sender may not talk here: kept,
    # never answered); outbound: the reply's own row, always "handled".
    status: Mapped[str] = mapped_column(String(16), default="received")
    error: Mapped[str | None] = mapped_column(Text)
    # Tries to answer it, counted before each starts (a crash counts): see bot/attempts.py.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reply_to_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _now()
    handled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LLMCall(Base):
    __tablename__ = "llm_calls"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float | None] = mapped_column(Float)  # NULL: no price known
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    persona_id: Mapped[int | None] = mapped_column(ForeignKey("personas.id", ondelete="SET NULL"))
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL"), index=True
    )
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("workflow_runs.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = _now()


class Outbox(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column()  # OutgoingMessage.to_dict()
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = _now()
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = _now()
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEvent(Base):
    """Something done on someone's behalf, such as a tool call: who (``actor``), what
    (``action``, ``subject``), how it went (``status``) and the details (``data``).
    Append-only: a database trigger refuses UPDATE and DELETE."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = _now()
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(255), default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="ok", server_default="ok")
    # The same key for the same logical action: an action with effects that succeeded under
    # it is not done again (its recorded result is returned).
    key: Mapped[str | None] = mapped_column(String(200), index=True)


class Workflow(Base):
    __tablename__ = "workflows"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    command: Mapped[str | None] = mapped_column(String(32), unique=True)
    version: Mapped[int] = mapped_column(Integer, default=0)  # the current version's number
    enabled: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    # sha256 of the webhook secret: the secret itself is shown once and never stored.
    webhook_secret_hash: Mapped[str | None] = mapped_column(String(64))
    last_scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class WorkflowVersion(Base):
    """Every saved change is a new version; runs record the version they ran."""

    __tablename__ = "workflow_versions"
    __table_args__ = (UniqueConstraint("workflow_id", "version"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)  # the document as written (YAML or JSON)
    spec: Mapped[dict[str, Any]] = mapped_column()  # the validated document
    origin: Mapped[str] = mapped_column(String(255), default="")  # file, chat, api
    created_at: Mapped[datetime] = _now()


class WorkflowRun(Base):
    __tablename__ = "workflow_runs"
    __table_args__ = (
        Index("ix_workflow_runs_workflow", "workflow_id", "id"),
        # One run per scheduled time, however many schedulers look at once.
        UniqueConstraint("workflow_id", "scheduled_for"),
        # One run per webhook delivery, however often (and however concurrently) it comes.
        UniqueConstraint("workflow_id", "idempotency_key"),
        # One child run per node of a parent: a node started again after a crash finds it.
        UniqueConstraint("parent_run_id", "parent_node"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("workflow_versions.id"))
    # queued → running ⇄ waiting → succeeded | failed | cancelled
    status: Mapped[str] = mapped_column(String(16), default="queued")
    trigger: Mapped[str] = mapped_column(String(16))  # command | shell | schedule | webhook
    scheduled_for: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    mocks: Mapped[dict[str, Any] | None] = mapped_column()
    output: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    failed_node: Mapped[str | None] = mapped_column(String(64))
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL")
    )
    ref: Mapped[dict[str, Any] | None] = mapped_column()
    started_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    progress_message: Mapped[str | None] = mapped_column(String(255))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    wait_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A sub-workflow's run: the run and node (a `workflow` node) waiting for it to end.
    parent_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("workflow_runs.id", ondelete="CASCADE")
    )
    parent_node: Mapped[str | None] = mapped_column(String(128))
    depth: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # parents above
    created_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WorkflowStep(Base):
    """One node of one run: what went in, what came out, what it cost, how long it took."""

    __tablename__ = "workflow_steps"
    __table_args__ = (
        UniqueConstraint("run_id", "node_id"),
        # Every message asks whether a run waits for an answer in its conversation: the
        # few waiting steps are found without reading every step ever run.
        Index("ix_workflow_steps_waiting", "run_id", postgresql_where=text("status = 'waiting'")),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("workflow_runs.id", ondelete="CASCADE"))
    node_id: Mapped[str] = mapped_column(String(128))
    # running → succeeded | failed | skipped | waiting
    status: Mapped[str] = mapped_column(String(16))
    input: Mapped[Any | None] = mapped_column(JSONB)
    output: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    wait_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PromptAction(Base):
    """A reusable prompt: a template run on a message, a thread or given text (/t NAME).

    A member's action is theirs (``owner_id``); one saved by the owner or an admin is
    shared (``owner_id`` NULL) and everyone may run it. A name is unique per owner, so a
    member's own action of a shared name comes first for them and changes nothing for others.
    """

    __tablename__ = "prompt_actions"
    __table_args__ = (UniqueConstraint("name", "owner_id", postgresql_nulls_not_distinct=True),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    template: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    temperature: Mapped[float | None] = mapped_column(Float)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class PromptActionRun(Base):
    """Every run of a prompt action (saved or tried), kept: input, output, model, cost."""

    __tablename__ = "prompt_action_runs"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    action_id: Mapped[int | None] = mapped_column(
        ForeignKey("prompt_actions.id", ondelete="SET NULL"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))  # "try" for a template not saved
    template: Mapped[str] = mapped_column(Text)
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL")
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    input: Mapped[str] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()


class PairingCode(Base):
    """The code a stranger on a ``pairing`` channel gets: one live code per person, shown
    again when they write again, until the owner approves it or it expires.

    Kept in plain text: the same code must be shown again, and a hash of 40 bits is undone
    in seconds anyway; it lives an hour, and only owners and admins can approve one."""

    __tablename__ = "pairing_codes"
    # The minute's replies are counted on every stranger's message: without reading them all.
    __table_args__ = (Index("ix_pairing_codes_replied_at", "replied_at"),)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    code: Mapped[str] = mapped_column(String(16), unique=True)
    identity: Mapped[str] = mapped_column(String(300))  # telegram:123, as the owner reads it
    # Where the welcome goes once approved: the conversation they last wrote in.
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The last time the code was shown: at most once per interval per person.
    replied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Secret(Base):
    """A credential (an API token for a workflow's http node, a persona's provider key),
    encrypted with the installation's key; the plain value is never stored or logged."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("scope", "name"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    scope: Mapped[str] = mapped_column(String(96), default="global")
    name: Mapped[str] = mapped_column(String(96))
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class StoredFile(Base):
    """A file someone sent (in the web chat, or later an email attachment): kept in the
    database like everything else that matters, once per content (sha256)."""

    __tablename__ = "files"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now()


class ChannelMark(Base):
    """What a channel must remember about its platform across workers and restarts: the
    platform id of a placeholder a reply replaces, the parts of a long reply already posted,
    the threads the bot is part of. Kept until ``expires_at`` (then swept)."""

    __tablename__ = "channel_marks"
    __table_args__ = (Index("ix_channel_marks_expires_at", "expires_at"),)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
