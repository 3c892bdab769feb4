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


TEXT_EXAMPLES = "(.txt, .md, .csv, .json, …)"


def not_text(filename: str, kind: str) -> str:
    """Why a file cannot be read, and what would work."""
    return f"{filename} is {kind}, not text: attach a text file {TEXT_EXAMPLES} or paste the text."


def files_note(cut: Sequence[tuple[str, int, int]], unread: Sequence[tuple[str, str]]) -> str:
    """Said after a persona's answer: what of the files sent with the message it did not read."""
    notes = [
        f"I read only the start of {name} (the first {kept:,} of {total:,} characters); "
        "SWITCHBOARD_FILE_TOKEN_BUDGET sets how much of a file I read."
        for name, kept, total in cut
    ]
    if unread:
        names = ", ".join(f"{name} ({kind})" for name, kind in unread)
        notes.append(f"I couldn't read {names}: I can read text files {TEXT_EXAMPLES}.")
    return "\n".join(f"({note})" for note in notes)


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


STOPPED_MIDWAY = "the worker answering it stopped mid-way (it crashed or was killed)"


def set_aside(attempts: int, error: str | None) -> str:
    """A message that failed every try: said once, and it is not tried again by itself."""
    return (
        f"I set your message aside after {plural(attempts, 'attempt')} to answer it failed; "
        f"the last one: {error or STOPPED_MIDWAY}. Send /retry to try it again."
    )


def turn_timed_out(seconds: float) -> str:
    return (
        f"Answering that took more than {seconds:g} s and was stopped. Send /retry to try "
        "again, or ask for something smaller (the limit is SWITCHBOARD_TURN_TIMEOUT)."
    )


def no_persona_configured() -> str:
    return "No persona is available. Add one under the config dir's personas/ and restart."


# --- the model could not answer (bot/llm.py) ----------------------------------------------

_SWITCH_MODEL = (
    "point Switchboard at another model with SWITCHBOARD_MODEL "
    "(and SWITCHBOARD_LLM_API_BASE for an OpenAI-compatible server)"
)
_SAVED_FIX = "Your message is saved: send /retry once that's done."
_SAVED = "Your message is saved: send /retry when the model is back."


def unreachable_text(model: str, address: str) -> str:
    if model.startswith("ollama"):
        name = model.split("/", 1)[-1]
        hint = f"Start Ollama (`ollama serve` and `ollama pull {name}`) or {_SWITCH_MODEL}."
    else:
        hint = f"Check that the server is running, or {_SWITCH_MODEL}."
    return f"I couldn't reach the model {model} at {address}. {hint} {_SAVED}"


def timeout_text(model: str, address: str, seconds: float) -> str:
    return (
        f"The model {model} at {address} didn't answer within {seconds:g} seconds. It may be "
        f"busy or still loading: allow it longer with SWITCHBOARD_LLM_TIMEOUT, or {_SWITCH_MODEL}. "
        f"{_SAVED}"
    )


def auth_text(model: str, address: str, key_variable: str) -> str:
    return (
        f"The provider at {address} refused the credentials for the model {model}. "
        f"Set {key_variable} to a valid key, or {_SWITCH_MODEL}. {_SAVED_FIX}"
    )


def missing_key_text(model: str, key_variables: Sequence[str]) -> str:
    keys = " or ".join(key_variables)
    return f"The model {model} needs an API key: set {keys}, or {_SWITCH_MODEL}. {_SAVED_FIX}"


def not_found_text(model: str, address: str) -> str:
    if model.startswith("ollama"):
        hint = f"Pull it with `ollama pull {model.split('/', 1)[-1]}`"
    else:
        hint = "Check the model name in SWITCHBOARD_MODEL"
    return f"The server at {address} doesn't know the model {model}. {hint}. {_SAVED_FIX}"


def unavailable_text(model: str, address: str, status: int) -> str:
    return (
        f"The model {model} at {address} is unavailable right now (HTTP {status}). "
        f"Send /retry in a moment, or {_SWITCH_MODEL}. Your message is saved."
    )


def failure_text(model: str, address: str, detail: str) -> str:
    return (
        f"The model {model} at {address} couldn't answer: {detail} "
        "Your message is saved: send /retry to try again."
    )


def run_goes_on(run_id: int, status: str, waited: float | None) -> str:
    """Where a run stands when `switchboard chat` stops waiting for it."""
    follow = f"follow it with `switchboard runs show {run_id}`"
    if status == "cancelled":
        return f"Run #{run_id} was cancelled."
    if status == "waiting":
        return f"Run #{run_id} is waiting (for an answer, an approval or a timer); {follow}."
    return f"Run #{run_id} is still {status} after {waited or 0:g} s; {follow}."


def cost(usd: float | None) -> str:
    """A cost as people read it; None is a model with no known price, never $0."""
    return "no price known" if usd is None else f"${usd:.4f}"


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 call``, ``2 calls``: a count with its noun agreeing (``many`` if not noun + s)."""
    return f"{count:,} {noun if count == 1 else many or noun + 's'}"


def cut_off(calls: int) -> str:
    """Model calls that started and never finished (a crash, a stopped turn): their tokens
    are not known."""
    return f"{plural(calls, 'call')} cut off"


def clip(text: str, limit: int) -> str:
    """Text on one line, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def nowhere_to_post() -> str:
    return (
        "This run has no conversation to post in (a schedule, a webhook or the shell started "
        "it): say where with to: {channel, chat}."
    )


def unaddressed_webhook(nodes: Sequence[str]) -> str:
    return (
        f"Note: a run this webhook starts has no conversation to answer in, so the reply "
        f"node(s) {', '.join(nodes)} will fail: give them to: {{channel, chat}}."
    )


# --- who may see and do what (bot/people.py, bot/access.py) --------------------------------


def not_your_run(run_id: int) -> str:
    # The same words whether the run exists or not: a stranger learns nothing by guessing ids.
    return f"Run #{run_id} isn't one of yours."


def staff_only(command: str) -> str:
    return f"Only the owner or an admin may use {command}."


def pairing_code(code: str, minutes: int) -> str:
    return (
        "Hi! I only talk with people the owner of this assistant has let in. "
        f"Your pairing code is {code} (valid for {minutes} minutes): send it to the owner, "
        f"who approves it with /approve-user {code} or `switchboard users approve {code}`. "
        "Once they have, write again."
    )


def welcome() -> str:
    return "You're in. The owner approved you: write anything to start, or /help for the commands."


def approved(identity: str) -> str:
    return f"Approved {identity}: they can talk to Switchboard now, and I've told them so."


def no_such_code(code: str) -> str:
    return (
        f"No pairing code {code} is waiting. Check it letter by letter; "
        "`switchboard users list` shows the codes waiting for approval."
    )


def code_expired(code: str, identity: str) -> str:
    return (
        f"The pairing code {code} of {identity} has expired: ask them to write again for a new one."
    )


# --- templates that broke a bound (bot/sandbox.py) ----------------------------------------


def template_too_slow(seconds: float) -> str:
    return (
        f"That template ran for more than {seconds:g} s and was stopped. "
        "Make it do less work: fewer or smaller loops."
    )


def template_too_big(limit: int) -> str:
    return (
        f"That template would make more than {limit:,} characters and was stopped. "
        "Make it produce less text."
    )


def template_too_much_memory(megabytes: int) -> str:
    return (
        f"That template needed more than {megabytes:,} MB of memory and was stopped. "
        "Make it build smaller values."
    )


def template_range_too_long(limit: int, asked: int) -> str:
    return f"range() may count at most {limit:,} items in a template; that one asked for {asked:,}."


def template_number_too_big(digits: int) -> str:
    return f"Numbers in a template may have at most {digits:,} digits; that one would have more."


def template_crashed(code: int | None) -> str:
    return (
        f"The process rendering that template stopped unexpectedly (exit code {code}). "
        "Try again; if it happens again, simplify the template."
    )


def template_process_failed(detail: str) -> str:
    return (
        f"I couldn't start the process that renders templates ({detail}). Check "
        "SWITCHBOARD_TEMPLATE_MEMORY_MB: it must leave room for Python itself (64 MB or more)."
    )


def database_down() -> str:
    return (
        "Your message was not saved: Switchboard's database is not answering right now "
        "(it is restarted by itself). Send it again in a moment."
    )


def service_down_retry() -> str:
    return "Switchboard's database or queue is not answering right now; deliver this again later."


def replies_expired(count: int, minutes: int) -> str:
    return (
        f"{plural(count, 'reply', 'replies')} here could not be delivered for over "
        f"{minutes} minutes and {'was' if count == 1 else 'were'} dropped rather than sent "
        "out of context. Ask again if you still need an answer."
    )


def persona_limited(persona: str, limits: str) -> str:
    return (
        f"Sorry, {persona} talks only to {limits}. Send /persona list for the personas you "
        "can use here."
    )
