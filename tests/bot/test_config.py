"""Settings read from the environment."""

from __future__ import annotations

import pytest

from bot.config import Settings


def test_web_hosts_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_WEB_HOSTS", "chat.example.com, switchboard.lan ,")
    assert Settings().web_hosts == ["chat.example.com", "switchboard.lan"]
    monkeypatch.delenv("SWITCHBOARD_WEB_HOSTS")
    assert Settings().web_hosts == []
