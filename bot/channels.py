"""The channel seam: what an adapter is given and what it provides, and nothing else.

An adapter imports this module and ``bot.messages`` alone. It is built by a factory from a
``Wiring`` (settings, the Redis pool, and the few reads of stored data it may need), and it
provides the ``ChatAdapter`` protocol plus, where its platform can, the small optional
capabilities below. ``Channels`` is the one registry of the channels a process serves:
`switchboard up` starts their listeners, and every process sends through it (the outbox)
and shows progress through it (``LiveText``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from bot.messages import Attachment, ConversationRef, IncomingMessage, OutgoingMessage, SentRef

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from bot.config import Settings

MAX_FILE = 25 * 1024 * 1024  # what chat platforms accept; larger files are refused
MAX_FILE_TEXT = f"{MAX_FILE // 2**20} MB"

Dialect = Literal["markdown", "mrkdwn", "html", "plain"]


@dataclass(frozen=True)
class Received:
    """What became of a message handed to ``Dispatch``: stored (or found stored before)."""

    message_id: int
    conversation_id: int
    duplicate: bool


# Persist a message and queue its answer; an adapter acknowledges its platform only after.
Dispatch = Callable[[IncomingMessage], Awaitable[Received]]


@dataclass(frozen=True)
class Line:
    """One message of a transcript, as a channel shows past messages."""

    message_id: int
    direction: str
    text: str
    in_reply_to: int | None
    files: tuple[str, ...] = ()  # names of the files it carried
    key: str = ""  # a reply's idempotency key: the same reply arriving live is shown once


@dataclass(frozen=True)
class Capabilities:
    """What a channel's platform takes: ``text_limit`` characters per message (longer
    replies are split; None: any length is one message, as on the local channels), files
    up to ``file_limit`` bytes, Markdown converted to ``dialect``, and at most
    ``sends_per_second`` messages per chat (0: no pacing)."""

    text_limit: int | None
    dialect: Dialect = "markdown"
    file_limit: int = MAX_FILE
    edits: bool = False  # a sent message can be replaced (a status line, a placeholder)
    buttons: bool = False  # a message can carry buttons that answer by command
    sends_per_second: float = 0.0


class ChatAdapter(Protocol):
    """One platform. ``start`` listens and calls ``dispatch`` before it acknowledges each
    message (``IncomingMessage.external_id`` identifies the message within the channel:
    qualify it with the chat where a platform numbers messages per chat); ``send`` is called
    by any worker with a reply from the outbox and maps platform failures to
    ``AdapterError`` (``retry_after`` from a 429); ``stop`` closes what ``start`` opened."""

    channel: str
    capabilities: Capabilities

    async def start(self, dispatch: Dispatch) -> None: ...

    async def send(self, out: OutgoingMessage) -> SentRef: ...

    async def stop(self) -> None: ...


@runtime_checkable
class LiveText(Protocol):
    """Optional: show a reply while it is written (the pieces as they come), when someone
    is ``watching`` the conversation now."""

    async def delta(self, ref: ConversationRef, in_reply_to: int, text: str) -> None: ...

    async def watching(self, ref: ConversationRef) -> bool: ...


@runtime_checkable
class StatusLine(Protocol):
    """Optional: keep one line per ``key`` (a run's progress) up to date in place."""

    async def status(self, ref: ConversationRef, key: str, text: str) -> None: ...


@runtime_checkable
class Serves(Protocol):
    """Optional: the channel receives over HTTP; its routes join the process's one server."""

    def routes(self) -> Sequence[Any]: ...


@dataclass(frozen=True)
class ChannelState:
    """How a channel's connection is, for `switchboard status` and /healthz (times are
    Unix seconds; None: not yet)."""

    connected: bool
    since: float | None = None  # connected (or down) since
    last_event: float | None = None
    last_send: float | None = None
    last_error: str = ""
    detail: str = ""  # how it connects: "Socket Mode", "events over HTTP", ...


@runtime_checkable
class Reports(Protocol):
    """Optional: the channel keeps a connection of its own and says how it is."""

    def state(self) -> ChannelState: ...


@runtime_checkable
class Typing(Protocol):
    """Optional: show that an answer to ``in_reply_to`` is being written (a typing
    indicator, or a placeholder the reply replaces)."""

    async def typing(self, ref: ConversationRef, in_reply_to: int) -> None: ...


class Marks(Protocol):
    """What a channel remembers about its platform, shared by every worker and kept across
    restarts (a placeholder's id, the parts of a reply already posted), each for ``keep``
    seconds. Raises ``ServiceUnavailable`` when its store cannot be reached."""

    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str, *, keep: float, replace: bool = True) -> bool: ...

    async def append(self, key: str, value: str, *, keep: float) -> None: ...

    async def take(self, key: str) -> str | None: ...


# The transcript at a conversation, and one stored file of one of its messages.
History = Callable[[ConversationRef], Awaitable[list[Line]]]
MessageFile = Callable[[ConversationRef, int, int], Awaitable[Attachment | None]]
# A file's content, wherever it is kept.
Content = Callable[[Attachment], Awaitable[bytes]]
# A channel's marks, by the channel's name.
MarksFor = Callable[[str], Marks]


@dataclass(frozen=True)
class Wiring:
    """What a channel factory may use: settings, the Redis pool, reads of stored data, and
    its marks."""

    settings: Settings
    redis: Redis
    history: History
    message_file: MessageFile
    content: Content
    marks: MarksFor


Factory = Callable[[Wiring], ChatAdapter | None]  # None: not enabled by the settings


class Channels(Mapping[str, ChatAdapter]):
    """The channels a process serves, by name: given, or built by ``adapters()`` when first
    used (a command that only reads stored rows never loads a platform's SDK)."""

    def __init__(
        self, adapters: Iterable[ChatAdapter] | Callable[[], Iterable[ChatAdapter]]
    ) -> None:
        self._source = adapters
        self._built: dict[str, ChatAdapter] | None = None

    @property
    def _by_name(self) -> dict[str, ChatAdapter]:
        if self._built is None:
            found = self._source() if callable(self._source) else self._source
            self._built = {adapter.channel: adapter for adapter in found}
        return self._built

    def __getitem__(self, name: str) -> ChatAdapter:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def live(self, name: str) -> LiveText | None:
        adapter = self._by_name.get(name)
        return adapter if isinstance(adapter, LiveText) else None

    def status_line(self, name: str) -> StatusLine | None:
        adapter = self._by_name.get(name)
        return adapter if isinstance(adapter, StatusLine) else None

    def typing(self, name: str) -> Typing | None:
        adapter = self._by_name.get(name)
        return adapter if isinstance(adapter, Typing) else None

    def routes(self) -> list[Any]:
        return [route for a in self.values() if isinstance(a, Serves) for route in a.routes()]

    async def start(self, dispatch: Dispatch) -> None:
        for adapter in self.values():
            await adapter.start(dispatch)

    async def stop(self) -> None:
        for adapter in reversed(list(self.values())):
            await adapter.stop()
