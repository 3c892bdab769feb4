"""`switchboard slack manifest`: one paste creates the Slack app, workflow commands included."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from bot.app import Runtime
from bot.config import Settings
from tests.bot.test_cli import switchboard

DIGEST = """
name: digest
description: Summarise what happened today.
command: /digest
nodes:
  say: {type: reply, text: "nothing happened"}
"""


async def test_the_manifest_names_every_command_and_socket_mode(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "digest.yaml").write_text(DIGEST)
    env = {"SWITCHBOARD_CONFIG_DIR": str(tmp_path)}

    result = await switchboard(settings, "slack", "manifest", env=env)

    assert result.returncode == 0, result.stderr
    found = yaml.safe_load(result.stdout)
    commands = {c["command"]: c for c in found["features"]["slash_commands"]}
    assert commands["/digest"]["description"] == "Summarise what happened today."
    assert {"/run", "/approve", "/retry", "/help"} <= set(commands)
    assert all("url" not in c for c in commands.values())
    assert found["settings"]["socket_mode_enabled"] is True
    assert "app_mention" in found["settings"]["event_subscriptions"]["bot_events"]
    assert {"chat:write", "commands", "files:write"} <= set(found["oauth_config"]["scopes"]["bot"])


async def test_http_mode_points_every_request_at_one_url(
    runtime: Runtime, settings: Settings
) -> None:
    url = "https://switchboard.example.com/slack/events"

    result = await switchboard(settings, "slack", "manifest", "--json", "--url", url)

    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["settings"]["socket_mode_enabled"] is False
    assert found["settings"]["event_subscriptions"]["request_url"] == url
    assert found["settings"]["interactivity"]["request_url"] == url
    assert {c["url"] for c in found["features"]["slash_commands"]} == {url}
