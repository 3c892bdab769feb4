"""One way to cut a long reply into the messages a platform accepts.

A part ends at the best break that fits: a blank line, else a line break, else the end of a
sentence, else a space; a word is cut only when no space fits (one "word" longer than a part).
A fenced code block (``` or ~~~, CommonMark's rules) that must cross parts is closed at the
end of one part, as its own closing line, and reopened at the start of the next with its
opening line (info string included, indentation dropped so a new message does not read it as
indented code); those added lines count within the limit. A code block left open at the end
of the text is closed. Whitespace at a cut is dropped, except the indentation of the code line
a continued block resumes with.

The exact property: every part is at most ``limit`` characters and neither starts nor ends
with whitespace; taking off the fence lines this module added, each part is the next piece of
the text and nothing but whitespace lies between, before or after these pieces.

A fence whose own lines leave no room for code at this limit (an info string near the limit
long) is split as plain text: no part could both hold it and be balanced.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass

_FENCE_LINE = re.compile(r"^[ \t]*(`{3,}|~{3,})(.*)$", re.MULTILINE)
_SPACE = re.compile(r"\s*")
# The breaks a part may end at, best first; group 1 starts where the part would end.
_BREAKS = (
    re.compile(r"(\n)[^\S\n]*\n"),
    re.compile(r"(\n)"),
    re.compile(r"[.!?\u3002\uff01\uff1f][\"')\]\u2019\u201d\u00bb]*(\s)"),
    re.compile(r"(\s)"),
)
# A blank line that starts inside the window may end a little after it.
_LOOKAHEAD = 64


@dataclass(frozen=True)
class _Fence:
    """A fenced code block, by offsets into the text."""

    marker: int  # where its opening marker starts
    first: int  # its first character of code that is not whitespace
    last: int  # just after its last character of code that is not whitespace
    end: int  # just after its closing marker
    head: str  # its opening line and a newline, to reopen it
    foot: str  # a newline and its closing line, to close it

    def holds(self, i: int) -> bool:
        """A part may end (or resume) at ``i`` inside this block, code on either side."""
        return self.first < i < self.last

    def fits(self, limit: int) -> bool:
        if self.last - self.first < 2:
            return self.end - self.marker <= limit
        opening = self.first + 1 - self.marker + len(self.foot)
        closing = len(self.head) + 1 + self.end - self.last
        return max(opening, closing) <= limit


def split(text: str, limit: int) -> list[str]:
    """``text`` in parts of at most ``limit`` characters, cut by its structure."""
    if limit < 1:
        raise ValueError(f"a part needs a limit of at least one character, not {limit}")
    return list(_Cutter(text.strip(), limit).parts())


class _Cutter:
    def __init__(self, text: str, limit: int) -> None:
        self.text, fences = _fenced(text)
        self.limit = limit
        self.fences = [fence for fence in fences if fence.fits(limit)]
        self.markers = [fence.marker for fence in self.fences]

    def parts(self) -> Iterator[str]:
        pos = 0
        while pos < len(self.text):
            cut = self.cut(pos)
            yield self.head(pos) + self.text[pos:cut].rstrip() + (self.foot(cut) or "")
            pos = self.resume(cut)

    def cut(self, pos: int) -> int:
        """Where the part that starts at ``pos`` ends: the best break that fits."""
        room = self.limit - len(self.head(pos))
        if len(self.text) - pos <= room:
            return len(self.text)
        start = _past_space(self.text, pos)  # a resumed code line starts with its indent
        for pattern in _BREAKS:
            found = self.last_break(pattern, start, pos, room)
            if found is not None:
                return found
        return self.hard_cut(pos, room)

    def hard_cut(self, pos: int, room: int) -> int:
        # Never exhausted: a fence kept by _Fence.fits leaves room for a character of code.
        return next(c for c in range(pos + room, pos, -1) if self.fits(pos, c, room))

    def last_break(self, pattern: re.Pattern[str], start: int, pos: int, room: int) -> int | None:
        matches = list(pattern.finditer(self.text, start, pos + room + _LOOKAHEAD))
        cuts = (match.start(1) for match in reversed(matches))
        return next((c for c in cuts if self.fits(pos, c, room)), None)

    def fits(self, pos: int, cut: int, room: int) -> bool:
        foot = self.foot(cut)
        return foot is not None and cut - pos + len(foot) <= room

    def resume(self, cut: int) -> int:
        """Where the next part starts: past the whitespace, but a code line keeps its indent."""
        nxt = _past_space(self.text, cut)
        if self.head(nxt) and "\n" in self.text[cut:nxt]:
            return self.text.rfind("\n", cut, nxt) + 1
        return nxt

    def fence(self, i: int) -> _Fence | None:
        """The code block whose lines reach over offset ``i``, if any."""
        k = bisect_left(self.markers, i) - 1
        return self.fences[k] if k >= 0 and i < self.fences[k].end else None

    def head(self, pos: int) -> str:
        fence = self.fence(pos)
        return fence.head if fence and fence.holds(pos) else ""

    def foot(self, cut: int) -> str | None:
        """What closes a part that ends at ``cut``; None when it may not end there."""
        fence = self.fence(cut)
        if fence is None:
            return ""
        return fence.foot if fence.holds(cut) else None


def _past_space(text: str, i: int) -> int:
    return _SPACE.match(text, i).end()  # type: ignore[union-attr]  # \s* always matches


def _fenced(text: str) -> tuple[str, list[_Fence]]:
    """The text with a block left open closed, and its code blocks."""
    fences, opening = _scan(text)
    if opening is None:
        return text, fences
    closed = f"{text}\n{opening[0][: opening.start(1) - opening.start()]}{opening[1]}"
    return closed, _scan(closed)[0]


def _scan(text: str) -> tuple[list[_Fence], re.Match[str] | None]:
    fences: list[_Fence] = []
    opening = None
    for line in _FENCE_LINE.finditer(text):
        if opening is None:
            opening = None if line[1][0] == "`" and "`" in line[2] else line
        elif (
            line[1][0] == opening[1][0] and len(line[1]) >= len(opening[1]) and not line[2].strip()
        ):
            fences.append(_between(text, opening, line))
            opening = None
    return fences, opening


def _opens(line: re.Match[str]) -> bool:
    return not (line[1][0] == "`" and "`" in line[2])


def _closes(opening: re.Match[str], line: re.Match[str]) -> bool:
    same = line[1][0] == opening[1][0] and len(line[1]) >= len(opening[1])
    return same and not line[2].strip()


def _between(text: str, opening: re.Match[str], closing: re.Match[str]) -> _Fence:
    body = opening.end() + 1
    code = text[body : closing.start()]
    return _Fence(
        marker=opening.start(1),
        first=body + len(code) - len(code.lstrip()),
        last=body + len(code.rstrip()),
        end=closing.end(1),
        head=text[opening.start(1) : opening.end()].rstrip() + "\n",
        foot="\n" + text[closing.start() : closing.end(1)],
    )
