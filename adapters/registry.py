"""Every channel Switchboard knows, and how each is built when its settings enable it.

A factory returns None for a channel its settings leave off; one whose platform SDK is
heavy imports it only then. Adding a platform is a module in ``adapters/`` and a line here.
"""

from __future__ import annotations

from adapters.local import LocalStream
from bot.channels import Channels, ChatAdapter, Factory, Wiring


def _terminal(wiring: Wiring) -> ChatAdapter:
    return LocalStream(wiring.redis, "terminal")


def _web(wiring: Wiring) -> ChatAdapter:
    from adapters.web import WebAdapter

    return WebAdapter(wiring.redis, wiring.history, files=wiring.message_file)


def _slack(wiring: Wiring) -> ChatAdapter | None:
    if wiring.settings.slack_bot_token is None:
        return None
    from adapters.slack import SlackAdapter

    return SlackAdapter(wiring)


FACTORIES: dict[str, Factory] = {
    "terminal": _terminal,
    "web": _web,
    "slack": _slack,
}


def build_channels(wiring: Wiring) -> Channels:
    """The channels the settings enable, each built when the process first needs them."""

    def enabled() -> list[ChatAdapter]:
        built = (factory(wiring) for factory in FACTORIES.values())
        return [adapter for adapter in built if adapter is not None]

    return Channels(enabled)
