"""`switchboard users`: the people, their roles and accounts, and letting strangers in.
The shell acts as the owner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer

from bot.cli_support import Typer, run_async, settings_for

users_app = Typer(help="People: roles, accounts on each channel, pairing approvals.")
User = Annotated[
    str, typer.Argument(metavar="USER", help="A user id, or an account: telegram:123.")
]


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users", no_args_is_help=True)


@users_app.command("list")
def users_list() -> None:
    """Everyone, one per line: id, role, name, accounts, approval."""
    from bot import people

    async def work(session: Any) -> str:
        return "\n".join(await people.listing(session)) or "Nobody has written yet."

    _echo(work)


@users_app.command("show")
def users_show(user: User) -> None:
    """One person (a user id or an account such as telegram:123) in full."""
    from bot import people

    _echo(lambda session: people.show(session, user))


@users_app.command("role")
def users_role(
    user: User,
    role: Annotated[str, typer.Argument(metavar="ROLE", help="owner, admin or member.")],
) -> None:
    """Make a person owner, admin or member."""
    from bot import people

    _echo(lambda session: people.set_role(session, user, role))


@users_app.command("link")
def users_link(
    user: User,
    account: Annotated[str, typer.Argument(metavar="CHANNEL:ID", help="The account to link.")],
) -> None:
    """Make ACCOUNT (CHANNEL:ID) one of USER's; a person it belonged to is merged into USER."""
    from bot import people

    _echo(lambda session: people.link(session, user, account))


@users_app.command("approve")
def users_approve(
    code: Annotated[str, typer.Argument(metavar="CODE", help="The pairing code, e.g. QK7M-X4TA.")],
) -> None:
    """Let in the stranger who was given CODE (they are told at once)."""
    settings = settings_for("WARNING")

    async def work() -> None:
        from bot import access
        from bot.app import open_runtime

        async with open_runtime(settings, config=False) as runtime:
            typer.echo(await access.approve(runtime.core, code, by="shell"))

    run_async(work)


def _echo(work: Callable[[Any], Awaitable[str]]) -> None:
    """Print what ``work`` says, done in one transaction."""
    settings = settings_for("WARNING")

    async def go() -> None:
        from bot.app import open_runtime

        async with open_runtime(settings, config=False) as runtime:
            async with runtime.core.sessions.begin() as session:
                said = await work(session)
            typer.echo(said)

    run_async(go)
