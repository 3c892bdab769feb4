"""What every `switchboard` command shares: help that names values, settings checked."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from typer.main import get_command
from typer.testing import CliRunner

from bot.cli import app
from bot.config import Settings
from tests.bot.test_cli import switchboard

PYTHON_TYPE = re.compile(r"<[a-z][\w\[\], |]*>")  # <bool>, <list[Path]>, <int>


def _commands(command: Any, path: list[str]) -> Iterator[list[str]]:
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, [*path, name])


def test_every_help_names_values_instead_of_python_types() -> None:
    runner = CliRunner()
    paths = list(_commands(get_command(app), []))
    assert ["messages", "retry"] in paths and len(paths) > 30

    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert not PYTHON_TYPE.search(result.output), (path, result.output)


async def test_chat_help_as_typed(settings: Settings) -> None:
    result = await switchboard(settings, "chat", "--help")

    assert result.returncode == 0
    assert "--file, -f FILE" in result.stdout and "--message, -m TEXT" in result.stdout
    assert not PYTHON_TYPE.search(result.stdout)


async def test_a_port_out_of_range_is_refused_clearly(settings: Settings) -> None:
    flag = await switchboard(settings, "up", "--port", "70000")
    assert flag.returncode == 2
    assert "Invalid value for '--port'" in flag.stderr and "65535" in flag.stderr

    variable = await switchboard(settings, "config", env={"SWITCHBOARD_WEB_PORT": "70000"})
    assert variable.returncode == 2
    assert "SWITCHBOARD_WEB_PORT" in variable.stderr and "65535" in variable.stderr
    assert "Traceback" not in flag.stderr + variable.stderr
