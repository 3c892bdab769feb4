"""YAML documents read within bounds: workflow and persona files come from people.

PyYAML's safe loader shares an aliased node rather than copying it, but everything that walks
the data afterwards (line positions, pydantic, JSON) walks it as a tree: nine lines of
nested aliases ("billion laughs") become a billion nodes, and 2,000 nested brackets end in a
RecursionError. ``compose`` refuses, before anything walks the document, a text larger than
``MAX_CHARS``, nesting deeper than ``MAX_DEPTH``, more than ``MAX_ALIASES`` aliases, and
aliases that would add more than ``MAX_ALIAS_NODES`` nodes; each refusal is a
``TooLarge`` (a ``yaml.MarkedYAMLError``) that names the line where it happened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError

MAX_CHARS = 1_000_000
MAX_DEPTH = 100
MAX_ALIASES = 100
MAX_ALIAS_NODES = 10_000


class TooLarge(ComposerError):
    """A document past one of the bounds; ``problem`` says which, ``problem_mark`` where."""

    def __init__(self, problem: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(problem=problem, problem_mark=mark)


def read_text(path: Path) -> str:
    """A file's text, refused unread when it is larger than the bound."""
    size = path.stat().st_size
    if size > MAX_CHARS * 4:  # UTF-8: at most four bytes a character
        raise TooLarge(_too_long(size, "bytes"))
    text = path.read_text(encoding="utf-8")
    if len(text) > MAX_CHARS:
        raise TooLarge(_too_long(len(text), "characters"))
    return text


def compose(text: str) -> tuple[yaml.Node | None, Any]:
    """The node graph (for lines) and the data of one document, within the bounds."""
    if len(text) > MAX_CHARS:
        raise TooLarge(_too_long(len(text), "characters"))
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _measure(root)
        return root, _construct(loader, root)
    finally:
        loader.dispose()


def load(text: str) -> Any:
    """The data of one document, within the bounds."""
    return compose(text)[1]


def describe(exc: yaml.YAMLError) -> tuple[int | None, str]:
    """The 1-based line a YAML error points at (None: it names none) and what to tell a
    person about it."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return None, f"invalid YAML: {exc}"
    mark = exc.problem_mark or exc.context_mark
    context = f" ({exc.context})" if exc.context else ""
    kind = "" if isinstance(exc, TooLarge) else "invalid YAML: "
    return (mark.line + 1 if mark is not None else None), f"{kind}{exc.problem}{context}"


def _too_long(size: int, unit: str) -> str:
    return f"the document has {size:,} {unit}; it may have at most {MAX_CHARS:,} characters"


class _BoundedLoader(yaml.SafeLoader):
    """Counts aliases and nesting while composing, before Python's stack or memory could."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0
        self.aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise TooLarge(f"more than {MAX_ALIASES} aliases (*name) in one document", mark)
        if self.depth >= MAX_DEPTH:
            raise TooLarge(f"nested more than {MAX_DEPTH} levels deep", mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _construct(loader: _BoundedLoader, root: yaml.Node) -> Any:
    try:
        return loader.construct_document(root)
    except (ValueError, OverflowError) as exc:  # an integer of 5,000 digits, say
        raise TooLarge(f"a value cannot be read: {exc}") from exc


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _measure(root: yaml.Node) -> None:
    """Refuse a graph whose aliases, written out as the tree readers walk, would be too big
    or too deep, or contain themselves. Each node is measured once (no recursion)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            children = _children(node)
            size[key] = 1 + sum(size[id(child)] for child in children)
            depth[key] = 1 + max((depth[id(child)] for child in children), default=0)
            open_.discard(key)
            _check(size[key] - len(size), depth[key], node.start_mark)
        elif key in open_:
            raise ComposerError(problem="an alias contains itself", problem_mark=node.start_mark)
        elif key not in size:
            open_.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node) if id(child) not in size)


def _check(added: int, depth: int, mark: yaml.Mark) -> None:
    """``added``: nodes the aliases below this one add, at least (the nodes read so far
    include all of its own)."""
    if added > MAX_ALIAS_NODES:
        raise TooLarge(
            f"the aliases here would expand to more than {MAX_ALIAS_NODES:,} extra values: "
            "write the values out instead",
            mark,
        )
    if depth > MAX_DEPTH:
        raise TooLarge(f"aliases here nest the values more than {MAX_DEPTH} levels deep", mark)
