"""`switchboard users` as the owner types it: approve a stranger, list, show, give roles."""

from __future__ import annotations

from bot.app import Runtime
from bot.config import Settings
from tests.bot.test_access import answers, code_of, tell
from tests.bot.test_cli import switchboard
from tests.support import drain


async def test_the_owner_lets_a_stranger_in_from_the_shell_and_gives_roles(
    settings: Settings, runtime: Runtime
) -> None:
    stranger = await tell(runtime, "hello?")
    await drain(runtime)
    code = await code_of(runtime, stranger)
    listed = await switchboard(settings, "users", "list")
    assert listed.stdout.strip() == f"#1  member  555  telegram:555  waiting for approval: {code}"

    approved = await switchboard(settings, "users", "approve", code)
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.startswith("Approved telegram:555: they can talk to Switchboard now")
    await drain(runtime)
    assert (await answers(runtime, stranger))[-1].startswith("You're in.")

    made = await switchboard(settings, "users", "role", "telegram:555", "admin")
    assert made.stdout.strip() == "#1 555 is now admin."
    shown = (await switchboard(settings, "users", "show", "1")).stdout
    assert shown.startswith("#1 555 — admin\n  accounts: telegram:555\n  approved: approved ")
    assert "messages: 1, runs: 0, prompt actions: 0" in shown

    wrong = await switchboard(settings, "users", "approve", "ACDE-FGHJ")
    assert wrong.returncode == 1 and "No pairing code ACDE-FGHJ is waiting." in wrong.stderr
    refused = (await switchboard(settings, "audit", "--action", "refused")).stdout
    assert "telegram:555  refused message:1  refused" in refused
    assert refused.rstrip().endswith("waiting for pairing approval")
    approvals = (await switchboard(settings, "audit", "--action", "approved")).stdout
    assert "shell  approved user:1  ok" in approvals
