"""`switchboard` as a newcomer types it: real processes, the embedded services, the fake LLM."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bot.app import Runtime
from bot.config import Settings
from tests.fakes.llm_server import FakeLLM
from tests.support import cli_env
from workflows.commands import install_template

ROOT = Path(__file__).resolve().parents[2]


async def switchboard(
    settings: Settings,
    *args: str,
    cwd: Path | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> Result:
    """Run the command without blocking the loop the fake LLM server answers on."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        env=cli_env(settings, **(env or {})),
        cwd=cwd or ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    feed = stdin.encode() if stdin is not None else b""
    stdout, stderr = await asyncio.wait_for(process.communicate(feed), 60)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def user_settings(settings: Settings, runtime: object) -> Settings:
    """Settings of a person on a fresh database (the runtime fixture cleaned it)."""
    return settings


async def test_help_is_instant_and_lists_the_commands(settings: Settings) -> None:
    result = await switchboard(settings, "--help")

    assert result.returncode == 0
    for command in ("up", "worker", "chat", "db", "config"):
        assert command in result.stdout


async def test_chat_message_goes_through_the_whole_path(
    user_settings: Settings, llm: FakeLLM
) -> None:
    result = await switchboard(user_settings, "chat", "--message", "hello from the shell")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "echo: hello from the shell"


async def test_terminal_conversation_continues_unless_new(
    user_settings: Settings, llm: FakeLLM
) -> None:
    await switchboard(user_settings, "chat", "-m", "I like tea")
    await switchboard(user_settings, "chat", "-m", "what do I like?")
    assert "I like tea" in [m["content"] for m in llm.requests[-1]["messages"]]

    result = await switchboard(user_settings, "chat", "--new", "-m", "start over")
    assert result.returncode == 0
    assert [m["content"] for m in llm.requests[-1]["messages"]][1:] == ["start over"]


async def test_chat_with_a_persona(user_settings: Settings, llm: FakeLLM) -> None:
    result = await switchboard(user_settings, "chat", "--persona", "coder", "-m", "fix my loop")

    assert result.returncode == 0, result.stderr
    assert "Talking to coder." in result.stderr
    assert "senior software engineer" in llm.requests[-1]["messages"][0]["content"]


async def test_chat_sends_a_file_with_the_message(user_settings: Settings, llm: FakeLLM) -> None:
    notes = user_settings.home / "notes.md"
    notes.write_text("# Standup\n- Ann: demo ready")
    action = '/t try "List owners in: {{ text }}"'
    result = await switchboard(user_settings, "chat", "-m", action, "--file", str(notes))

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "echo: List owners in: # Standup\n- Ann: demo ready"
    missing = await switchboard(user_settings, "chat", "-m", "hi", "-f", "nope.txt")
    assert missing.returncode == 2 and "cannot read nope.txt" in missing.stderr


async def test_chat_waits_for_the_result_of_the_run_a_command_starts(
    runtime: Runtime, settings: Settings, llm: FakeLLM
) -> None:
    await install_template(runtime.core, "summarize")
    result = await switchboard(settings, "chat", "-m", '/summarize text="ana: we ship friday"')

    assert result.returncode == 0, result.stderr
    started, *summary = result.stdout.splitlines()
    assert started.startswith("Started run #1 of summarize.")
    assert summary[0] == "echo: Summarise the following text."
    assert "ana: we ship friday" in summary


async def test_chat_says_how_to_follow_a_run_that_outlasts_the_reply_timeout(
    runtime: Runtime, settings: Settings, llm: FakeLLM
) -> None:
    await install_template(runtime.core, "summarize")
    llm.latency = 12  # the model answers after the chat stops waiting (8 s)
    result = await switchboard(
        settings, "chat", "-m", "/summarize text=slow", env={"SWITCHBOARD_REPLY_TIMEOUT": "8"}
    )

    assert result.returncode == 1
    assert "Started run #1 of summarize." in result.stderr
    assert "Run #1 is still running after 8 s; follow it with `switchboard runs show 1`." in (
        result.stderr
    )


async def test_a_run_without_its_input_says_which_and_how_to_give_it(
    runtime: Runtime, settings: Settings
) -> None:
    await install_template(runtime.core, "summarize")
    result = await switchboard(settings, "run", "summarize")

    assert result.returncode == 2
    assert result.stdout == ""
    assert "error: missing input 'text' (the conversation or document" in result.stderr
    assert "Give inputs with -i NAME=VALUE: switchboard run summarize -i text=…" in result.stderr


async def test_unknown_persona_exits_non_zero_with_a_clear_error(user_settings: Settings) -> None:
    result = await switchboard(user_settings, "chat", "--persona", "codr", "-m", "hi")

    assert result.returncode == 1
    assert "There is no persona called 'codr'. Did you mean coder?" in result.stderr


async def test_empty_message_is_refused(user_settings: Settings) -> None:
    result = await switchboard(user_settings, "chat", "-m", "  ")

    assert result.returncode == 2
    assert "empty" in result.stderr


async def test_a_failed_reply_exits_non_zero(user_settings: Settings, llm: FakeLLM) -> None:
    llm.fail_next(3, 500)
    result = await switchboard(user_settings, "chat", "-m", "hello?")

    assert result.returncode == 1
    assert "fake-model" in result.stderr and "/retry" in result.stderr


async def test_export_saves_the_file_in_the_current_directory(
    user_settings: Settings, tmp_path: Path
) -> None:
    await switchboard(user_settings, "chat", "-m", "note this")
    result = await switchboard(user_settings, "chat", "-m", "/export", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    (saved,) = tmp_path.glob("conversation-*.md")
    assert f"(saved {saved})" in result.stdout
    assert "note this" in saved.read_text()


async def test_config_masks_credentials(settings: Settings) -> None:
    masked = settings.model_copy(update={"database_url": "postgresql://sb:hunter2@db:5432/sb"})
    result = await switchboard(masked, "config")

    assert result.returncode == 0
    assert "hunter2" not in result.stdout
    assert "database_url = postgresql://sb:***@db:5432/sb" in result.stdout


async def test_interactive_chat_answers_each_line_until_end_of_input(
    user_settings: Settings,
) -> None:
    result = await switchboard(user_settings, "chat", stdin="hello\n\n/persona list\n")

    assert result.returncode == 0, result.stderr
    assert "echo: hello" in result.stdout
    assert "→ assistant" in result.stdout


async def test_up_serves_the_web_chat_runs_a_worker_and_stops_on_sigint(
    user_settings: Settings, tmp_path: Path
) -> None:
    port = _free_port()
    up = await _up(user_settings, tmp_path, "--port", str(port))
    try:
        banner = await asyncio.wait_for(_read_until(up, b"Press Ctrl+C"), 30)
        assert f"Web chat:  http://127.0.0.1:{port}" in banner
        async with aiohttp.ClientSession() as client:
            health = await client.get(f"http://127.0.0.1:{port}/healthz")
            assert health.status == 200, await health.text()
            parts = (await health.json())["parts"]
            assert [part["name"] for part in parts] == ["database", "queue", "worker", "web"]

        # chat finds up's worker and leaves the answering to it.
        result = await switchboard(user_settings, "chat", "-m", "via up")
        assert result.returncode == 0 and result.stdout.strip() == "echo: via up"

        second = await switchboard(user_settings, "up", "--port", str(port))
        assert second.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in second.stderr

        running = await switchboard(user_settings, "status")
        assert running.returncode == 0, running.stdout + running.stderr
        assert "1 Switchboard process(es) reporting." in running.stdout
        assert re.search(rf"web +ok +listening on 127.0.0.1:{port}", running.stdout)
    finally:
        up.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(up.wait(), 30)
    assert code == 0
    stopped = await switchboard(user_settings, "status")
    assert stopped.returncode == 1
    assert re.search(r"web +DOWN +enabled, but no running process serves it", stopped.stdout)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
async def test_a_chat_waiting_for_input_stops_at_once_on_a_signal(
    user_settings: Settings, stop: signal.Signals
) -> None:
    """A closed terminal or a `kill` ends the chat now, cleaning up, not at the next Enter."""
    chat = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "chat",
        env=cli_env(user_settings),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,  # kept open: the chat waits for a line
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.wait_for(_read_until(chat, b"Ctrl+D to leave."), 30)
    chat.send_signal(stop)
    code = await asyncio.wait_for(chat.wait(), 10)
    assert chat.stderr is not None
    assert code == 143, (await chat.stderr.read()).decode()


async def _read_until(process: asyncio.subprocess.Process, marker: bytes) -> str:
    assert process.stdout is not None
    seen = b""
    while marker not in seen:
        line = await process.stdout.readline()
        assert line, "switchboard up exited before it was ready"
        seen += line
    return seen.decode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_secrets_are_set_from_standard_input_and_listed_by_name(
    user_settings: Settings,
) -> None:
    stored = await switchboard(user_settings, "secrets", "set", "api_token", stdin="tok-123\n")
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout.strip() == "Stored the secret api_token (encrypted)."
    listed = await switchboard(user_settings, "secrets", "list")
    assert listed.stdout.strip() == "api_token" and "tok-123" not in listed.stdout


GREET = """name: greet
inputs:
  who: {type: string, default: world, description: whom to greet}
nodes:
  hello: {type: template, text: "Hello, {{ who }}!"}
output: "{{ hello }}"
tests:
  - name: greets the world
    expect: {output: "Hello, world!"}
"""


async def test_workflows_from_the_shell(user_settings: Settings, tmp_path: Path) -> None:
    good = tmp_path / "greet.yaml"
    good.write_text(GREET)
    bad = tmp_path / "bad.yaml"
    bad.write_text(GREET.replace("{{ who }}", "{{ whom }}"))

    assert (await switchboard(user_settings, "workflows", "validate", str(good))).returncode == 0
    refused = await switchboard(user_settings, "workflows", "validate", str(bad))
    assert refused.returncode == 1
    assert f"{bad}:5: nodes.hello.text: unknown variable 'whom' — did you mean 'who'?" in (
        refused.stderr
    )
    tested = await switchboard(user_settings, "test", str(good))
    assert tested.returncode == 0 and "PASS greet: greets the world" in tested.stdout

    both = await switchboard(user_settings, "workflows", "import", str(good), str(bad))
    assert both.returncode == 1 and both.stdout == ""  # all or nothing: greet was not saved
    assert (await switchboard(user_settings, "workflows", "import", str(good))).stdout.strip() == (
        "greet: version 1"
    )
    ran = await switchboard(user_settings, "run", "greet", "-i", "who=Ada")
    assert ran.returncode == 0 and ran.stdout.strip() == "Hello, Ada!"
    listed = await switchboard(user_settings, "workflows", "list")
    assert listed.stdout.strip() == "greet (version 1): 1 runs, 0 tokens, no price known"


async def test_templates_list_prints_one_name_per_line(user_settings: Settings) -> None:
    from workflows.templates import available

    listed = await switchboard(user_settings, "templates", "list")
    assert listed.stdout.split() == [t.name for t in available()]
    tested = await switchboard(user_settings, "test", "translate")
    assert tested.returncode == 0 and " 0 failed" in tested.stdout


async def test_tools_are_listed_and_their_calls_shown_in_the_audit_log(
    user_settings: Settings,
) -> None:
    listed = await switchboard(user_settings, "tools", "list")
    assert listed.returncode == 0, listed.stderr
    names = [line.split(" — ")[0] for line in listed.stdout.splitlines()]
    assert names == ["calculate", "current_time", "read_webpage"]

    shown = await switchboard(user_settings, "tools", "show", "calculate")
    assert "expression (str, required): " in shown.stdout
    unknown = await switchboard(user_settings, "tools", "show", "calc")
    assert unknown.returncode == 1 and "Did you mean 'calculate'?" in unknown.stderr

    empty = await switchboard(user_settings, "audit")
    assert empty.stdout.strip() == "Nothing recorded yet."
    source = "name: sum\nnodes:\n  add: {type: tool, tool: calculate, args: {expression: 2+3}}\n"
    path = user_settings.home / "sum.yaml"
    path.write_text(source)
    assert (await switchboard(user_settings, "workflows", "import", str(path))).returncode == 0
    ran = await switchboard(user_settings, "run", "sum")
    assert ran.returncode == 0, ran.stderr
    audit = await switchboard(user_settings, "audit", "--run", "1")
    [line] = audit.stdout.splitlines()
    assert "run:1/add  tool calculate  ok" in line and '{"expression": "2+3"}' in line
    other = await switchboard(user_settings, "audit", "--tool", "read_webpage")
    assert other.stdout.strip() == "Nothing recorded matches."


async def test_up_on_port_zero_takes_a_free_port_and_says_which(
    user_settings: Settings, tmp_path: Path
) -> None:
    up = await _up(user_settings, tmp_path, "--port", "0", "--no-worker")
    try:
        banner = await asyncio.wait_for(_read_until(up, b"Press Ctrl+C"), 30)
    finally:
        up.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(up.wait(), 30)
    found = re.search(r"Web chat:  http://127\.0\.0\.1:(\d+)", banner)
    assert found and int(found.group(1)) not in (0, 8765)
    assert "Worker:    none here (--no-worker)" in banner
    assert code == 0


async def _up(settings: Settings, cwd: Path, *args: str) -> asyncio.subprocess.Process:
    """`switchboard up ARGS` running in the background, its output piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "up",
        *args,
        env=cli_env(settings),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
