"""Every sentence Switchboard says to a person, in one place and one tone."""

from __future__ import annotations

from collections.abc import Sequence


def unknown_command(name: str, suggestion: str | None) -> str:
    hint = f" Did you mean /{suggestion}?" if suggestion else ""
    return f"I don't know the command /{name}.{hint} Send /help to see every command."


def usage_line(usage: str, problem: str = "") -> str:
    lead = f"{problem} " if problem else ""
    return f"{lead}Usage: {usage}"


def help_text(commands: Sequence[tuple[str, str]]) -> str:
    lines = ["Commands:"]
    lines += [f"  {usage} — {summary}" for usage, summary in commands]
    lines.append("Anything else you write goes to the active persona.")
    return "\n".join(lines)


def empty_message() -> str:
    return "Your message was empty. Write some text (or /help for commands)."


def message_too_long(length: int, limit: int) -> str:
    return (
        f"Your message is {length:,} characters long; I can take at most {limit:,}. "
        "Split it into parts, or send it as a file attachment."
    )


def unknown_persona(name: str, known: Sequence[str], suggestion: str | None) -> str:
    hint = f" Did you mean {suggestion}?" if suggestion else ""
    return f"There is no persona called '{name}'.{hint} Known personas: {', '.join(known)}."


def persona_switched(name: str, greeting: str) -> str:
    return f"Now talking to {name}." + (f"\n{greeting}" if greeting else "")


def new_context(persona: str) -> str:
    return f"Started a fresh conversation with {persona}. Earlier messages stay in /export."


def no_history() -> str:
    return "There are no messages in this conversation yet."


def export_caption(count: int) -> str:
    return f"Here is this conversation ({count} messages) as Markdown."


def no_usage() -> str:
    return "No model calls in this conversation yet."


def nothing_to_retry() -> str:
    return "There is no failed message to retry in this conversation."


def retrying(snippet: str) -> str:
    return f"Trying again: “{snippet}”"


def internal_error(reference: str) -> str:
    return (
        "Something went wrong on my side while answering; your message is saved. "
        f"Try /retry in a moment. (reference {reference})"
    )


def no_persona_configured() -> str:
    return "No persona is available. Add one under the config dir's personas/ and restart."
