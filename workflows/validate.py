"""Workflow documents checked before they are saved or run, with messages that point at a line.

``load`` parses a YAML (or JSON) document and raises ``WorkflowInvalid`` listing every
problem; ``validate_file`` returns a file's problems (none: it is valid); ``check`` runs the
checks a schema cannot express on a spec that already parsed: node types and their
parameters, the ``needs`` graph, the variables and sandbox of every expression, input types,
test cases and the schedule. A problem reads ``file:line: nodes.draft.prompt: message``.
"""

from __future__ import annotations

import graphlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import CroniterBadDateError, croniter
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from bot import people, yamlsafe
from bot.names import closest
from workflows.errors import ExpressionError, WorkflowError
from workflows.expressions import ENV, is_template, names_used, unsafe_attributes
from workflows.inputs import coerce
from workflows.nodes import NODE_TYPES
from workflows.nodes.base import ChecksMore, Fits, NodeType
from workflows.spec import (
    InputSpec,
    Limits,
    NodeSpec,
    Schedule,
    TestCase,
    Webhook,
    WorkflowSpec,
)

# Names every expression may read besides inputs and node outputs; map nodes add their item.
GLOBALS = ("run", "now", "inputs")
MAP_LOCALS = ("item", "index")
MAP_TYPE = "map"
RESERVED = frozenset({*GLOBALS, *MAP_LOCALS, "loop"})
EXPECT_KEYS = ("output", "status", "nodes")
STATUSES = ("succeeded", "failed", "waiting")
ALLOW_KEYS = people.ALLOW_KEYS
# A schedule must fire within this many years of a fixed start, so the answer never drifts.
CRON_HORIZON_YEARS = 5
CRON_START = datetime(2025, 1, 1)
# The models whose unknown keys pydantic reports, by (first key, depth of the error).
_MODELS_AT: Mapping[tuple[str, int], type[BaseModel]] = {
    ("", 1): WorkflowSpec,
    ("schedule", 2): Schedule,
    ("webhook", 2): Webhook,
    ("limits", 2): Limits,
    ("inputs", 3): InputSpec,
    ("tests", 3): TestCase,
}
_SEGMENT_START = re.compile(r"[.\[]")
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    source: str
    line: int | None
    path: str  # "nodes.summarize.prompt", "tests[0].inputs.n"; "" for the whole document
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class WorkflowInvalid(WorkflowError):
    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Positions:
    """Where each key of a document is: its path (``nodes.draft.prompt``) → 1-based line."""

    source: str = "<workflow>"
    lines: Mapping[str, int] = field(default_factory=dict)

    def line(self, path: str) -> int | None:
        """The line of ``path``, or of its nearest enclosing key that the document has."""
        cuts = [match.start() for match in _SEGMENT_START.finditer(path)]
        for prefix in [path, *(path[:cut] for cut in reversed(cuts)), ""]:
            if prefix in self.lines:
                return self.lines[prefix]
        return None

    def problem(self, path: str, message: str) -> Problem:
        return Problem(self.source, self.line(path), path, message)


def load(
    text: str, *, source: str = "<workflow>", node_types: Mapping[str, NodeType] | None = None
) -> WorkflowSpec:
    """The spec a YAML or JSON document describes, or ``WorkflowInvalid`` naming every problem."""
    return read(text, source=source, node_types=node_types)[0]


def read(
    text: str, *, source: str = "<workflow>", node_types: Mapping[str, NodeType] | None = None
) -> tuple[WorkflowSpec, dict[str, Any]]:
    """The spec and the parsed document it came from (parsed once), or ``WorkflowInvalid``."""
    spec, data, problems = _load(text, source, node_types)
    if spec is None or problems:
        raise WorkflowInvalid(problems)
    assert isinstance(data, dict)
    return spec, data


def parse(text: str) -> Any:
    """The data of a YAML or JSON document (stored versions: already validated)."""
    return _parse(text)[1]


def validate_file(path: Path, *, node_types: Mapping[str, NodeType] | None = None) -> list[Problem]:
    """A file's problems, each naming the file and line; none means it is valid."""
    try:
        text = read_file(path)
    except WorkflowInvalid as exc:
        return exc.problems
    return _load(text, str(path), node_types)[2]


def read_file(path: Path) -> str:
    """A workflow file's text, or ``WorkflowInvalid`` when it cannot be read or is too large."""
    try:
        return yamlsafe.read_text(path)
    except yamlsafe.TooLarge as exc:
        raise WorkflowInvalid([_yaml_problem(exc, str(path))]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        problem = Problem(str(path), None, "", f"cannot read the file: {exc}")
        raise WorkflowInvalid([problem]) from exc


def check(
    spec: WorkflowSpec,
    positions: Positions | None = None,
    *,
    node_types: Mapping[str, NodeType] | None = None,
) -> list[Problem]:
    """Everything about a parsed spec that its schema cannot say (empty: it is valid)."""
    where = positions or Positions()
    types = NODE_TYPES if node_types is None else node_types
    found = [
        *_name_problems(spec, where),
        *_node_problems(spec, where, types),
        *_graph_problems(spec, where),
        *_variable_problems(spec, where, types),
        *_input_problems(spec, where),
        *_test_problems(spec, where),
        *_schedule_problems(spec, where),
        *_allow_problems(spec, where),
    ]
    return _in_order(found)


# Parsing: YAML with positions, then the schema.


def _path_of(loc: Iterable[str | int]) -> str:
    """``("tests", 0, "inputs")`` → ``tests[0].inputs``."""
    path = ""
    for key in loc:
        path = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key
    return path


def _load(
    text: str, source: str, node_types: Mapping[str, NodeType] | None
) -> tuple[WorkflowSpec | None, Any, list[Problem]]:
    try:
        root, data = _parse(text)
        where, problems = _positions(root, source)
    except yaml.YAMLError as exc:
        return None, None, [_yaml_problem(exc, source)]
    if not isinstance(data, dict):
        return None, data, [where.problem("", "expected a mapping with at least name and nodes")]
    spec, schema_problems = _validate(data, where)
    if spec is not None:
        schema_problems += check(spec, where, node_types=node_types)
    return spec, data, _in_order(problems + schema_problems)


def _parse(text: str) -> tuple[yaml.Node | None, Any]:
    """The node graph (for lines) and the data of a YAML or JSON document, read once."""
    try:
        return yamlsafe.compose(text)
    except yamlsafe.TooLarge:
        raise
    except yaml.YAMLError:
        if not _is_json(text):
            raise
    # YAML refuses tab indentation, which JSON allows; JSON strings cannot hold a raw tab.
    return yamlsafe.compose(text.replace("\t", " "))


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _yaml_problem(exc: yaml.YAMLError, source: str) -> Problem:
    line, message = yamlsafe.describe(exc)
    return Problem(source, line, "", message)


def _positions(root: yaml.Node | None, source: str) -> tuple[Positions, list[Problem]]:
    lines: dict[str, int] = {}
    duplicates: list[tuple[str, int]] = []
    if root is not None:
        lines[""] = root.start_mark.line + 1
        _walk(root, "", lines, duplicates)
    where = Positions(source, lines)
    return where, [
        Problem(source, line, path, f"defined twice (first at line {lines[path]})")
        for path, line in duplicates
    ]


def _walk(
    node: yaml.Node,
    path: str,
    lines: dict[str, int],
    duplicates: list[tuple[str, int]],
) -> None:
    for key, mark, child in _children(node, path):
        if key in lines:
            duplicates.append((key, mark.line + 1))
            continue
        lines[key] = mark.line + 1
        _walk(child, key, lines, duplicates)


def _children(node: yaml.Node, path: str) -> Iterator[tuple[str, yaml.Mark, yaml.Node]]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = str(key.value)
            yield (f"{path}.{name}" if path else name), key.start_mark, value
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield f"{path}[{index}]", item.start_mark, item


def _validate(data: dict[str, Any], where: Positions) -> tuple[WorkflowSpec | None, list[Problem]]:
    nodes, problems = _node_specs(data.get("nodes"), where)
    document = data if nodes is None else {**data, "nodes": nodes}
    try:
        spec = WorkflowSpec.model_validate(document)
    except ValidationError as exc:
        return None, problems + [_schema_problem(error, (), where) for error in exc.errors()]
    return (None if problems else spec), problems


def _node_specs(nodes: Any, where: Positions) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Each node body as a NodeSpec, so an error names its node and the others still count."""
    if not isinstance(nodes, dict):
        return None, []
    built: dict[str, Any] = {}
    problems: list[Problem] = []
    for node_id, body in nodes.items():
        built[node_id], found = _node_spec(str(node_id), body, where)
        problems += found
    return built, problems


def _node_spec(node_id: str, body: Any, where: Positions) -> tuple[Any, list[Problem]]:
    if not isinstance(body, dict):
        return body, []  # the schema says what a node should be
    if not isinstance(body.get("needs", ()), str | list | tuple):
        message = "expected a node id or a list of node ids"
        problems = [where.problem(f"nodes.{node_id}.needs", message)]
        return NodeSpec.model_construct(id=node_id, type="", params={}), problems
    try:
        return NodeSpec.model_validate(NodeSpec.from_document(node_id, body)), []
    except ValidationError as exc:
        problems = [_schema_problem(error, ("nodes", node_id), where) for error in exc.errors()]
    except TypeError:
        message = "expected a node id or a list of node ids"
        problems = [where.problem(f"nodes.{node_id}.needs", message)]
    return NodeSpec.model_construct(id=node_id, type="", params={}), problems


def _schema_problem(error: ErrorDetails, prefix: Loc, where: Positions) -> Problem:
    loc = prefix + tuple(error["loc"])
    if loc[:1] == ("nodes",) and loc[2:3] == ("params",):
        loc = loc[:2] + loc[3:]
    if loc[-1:] == ("[key]",):
        return where.problem(_path_of(loc[:-1]), f"keys must be text, got {error['input']!r}")
    return where.problem(_path_of(loc), _schema_message(error, loc))


def _schema_message(error: ErrorDetails, loc: Loc) -> str:
    if error["type"] == "model_type" and loc[:1] == ("nodes",):
        return "expected a mapping with the node's type and parameters"
    if error["type"] == "model_type":
        return f"expected a mapping, got {_shown(error['input'])}"
    return _error_message(error, _known_keys(loc))


def _error_message(error: ErrorDetails, known_keys: Sequence[str]) -> str:
    if error["type"] == "missing":
        return "required"
    if error["type"] == "extra_forbidden":
        return _unknown("key", str(error["loc"][-1]), known_keys)
    message = error["msg"].removeprefix("Value error, ")
    if message.startswith("Input should be "):
        wanted = message.removeprefix("Input should be ").split(", unable to")[0]
        return f"should be {wanted}, got {_shown(error['input'])}"
    return message


def _known_keys(loc: Loc) -> list[str]:
    head = str(loc[0]) if len(loc) > 1 else ""
    model = _MODELS_AT.get((head, len(loc)))
    return list(model.model_fields) if model else []


# Names: node ids and inputs are both variables in expressions.


def _name_problems(spec: WorkflowSpec, where: Positions) -> Iterator[Problem]:
    for name in spec.inputs:
        if not name.isidentifier():
            message = "use letters, digits and '_' (inputs are variables in expressions)"
            yield where.problem(f"inputs.{name}", message)
    for name in [*spec.inputs, *spec.nodes]:
        if name in RESERVED:
            message = f"{name!r} is reserved: expressions already have a variable by that name"
            yield where.problem(_name_path(spec, name), message)
    for node_id in spec.nodes:
        if node_id in spec.inputs:
            message = (
                f"{node_id!r} is also an input: rename one, expressions cannot tell them apart"
            )
            yield where.problem(f"nodes.{node_id}", message)


def _name_path(spec: WorkflowSpec, name: str) -> str:
    return f"inputs.{name}" if name in spec.inputs else f"nodes.{name}"


# Node types and their parameters.


def _node_problems(
    spec: WorkflowSpec, where: Positions, types: Mapping[str, NodeType]
) -> Iterator[Problem]:
    for node in spec.nodes.values():
        kind = types.get(node.type)
        if kind is not None:
            yield from _param_problems(node, kind, where)
        elif not node.type:
            yield where.problem(
                f"nodes.{node.id}.type", f"required; known: {_listed(sorted(types))}"
            )
        else:
            yield where.problem(
                f"nodes.{node.id}.type", _unknown("node type", node.type, sorted(types))
            )


def _param_problems(node: NodeSpec, kind: NodeType, where: Positions) -> Iterator[Problem]:
    prefix = ("nodes", node.id)
    whole = Fits((), kind.params, node.params, f"node type {kind.name!r}", "parameter")
    yield from _fit_problems(whole, prefix, where)
    for check in kind.checks(node.params) if isinstance(kind, ChecksMore) else ():
        if isinstance(check, Fits):
            yield from _fit_problems(check, prefix, where)
        elif check.name not in check.known:
            path = _path_of((*prefix, *check.loc))
            yield where.problem(path, _unknown(check.kind, check.name, check.known))


def _fit_problems(check: Fits, prefix: Loc, where: Positions) -> Iterator[Problem]:
    """What keeps values from fitting their model, except types a run renders later."""
    try:
        check.model.model_validate(check.values)
    except ValidationError as exc:
        for error in exc.errors():
            if _rendered_later(dict(check.values), error):
                continue
            path = _path_of((*prefix, *check.loc, *error["loc"]))
            if error["type"] == "missing":
                message = f"required by {check.label}"
            elif error["type"] == "extra_forbidden":
                known = _field_names(check.model)
                message = _unknown(check.noun, str(error["loc"][-1]), known)
            else:
                message = _error_message(error, [])
            yield where.problem(path, message)


def _rendered_later(params: dict[str, Any], error: ErrorDetails) -> bool:
    """A value with ``{{ }}`` is a string until the run renders it: its type is checked then."""
    if error["type"] in ("extra_forbidden", "missing"):
        return False
    value: Any = params
    for key in error["loc"]:
        if not _has(value, key):
            break
        value = value[key]
    return any(is_template(text) for _, text in _strings(value, ""))


def _has(value: Any, key: str | int) -> bool:
    if isinstance(value, dict):
        return key in value
    return isinstance(value, list) and isinstance(key, int) and 0 <= key < len(value)


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


# The needs graph.


def _graph_problems(spec: WorkflowSpec, where: Positions) -> Iterator[Problem]:
    for node in spec.nodes.values():
        for index, need in enumerate(node.needs):
            if need not in spec.nodes:
                yield where.problem(
                    f"nodes.{node.id}.needs[{index}]", _unknown("node", need, list(spec.nodes))
                )
    cycle = _cycle(spec)
    if cycle:
        yield where.problem("nodes", "cycle " + " → ".join(cycle))


def _cycle(spec: WorkflowSpec) -> list[str]:
    """One cycle, in the order outputs flow (``a → b``: b needs a), from its first node."""
    graph = {
        node.id: [need for need in node.needs if need in spec.nodes] for node in spec.nodes.values()
    }
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        ring: list[str] = exc.args[1][:-1]
        order = list(spec.nodes)
        start = ring.index(min(ring, key=order.index))
        ring = ring[start:] + ring[:start]
        return [*ring, ring[0]]
    return []


def _upstream(spec: WorkflowSpec, node_id: str) -> set[str]:
    """The nodes ``node_id`` waits for, directly or through the nodes it waits for."""
    seen: set[str] = set()
    waiting = list(spec.nodes[node_id].needs)
    while waiting:
        need = waiting.pop()
        if need in spec.nodes and need not in seen:
            seen.add(need)
            waiting.extend(spec.nodes[need].needs)
    return seen


# Variables and the sandbox.


@dataclass(frozen=True)
class _Scope:
    """What the expressions of one place in the document may read."""

    known: tuple[str, ...]  # in the order worth suggesting: inputs, nodes, globals
    elsewhere: frozenset[str] = frozenset()  # outputs of nodes this node does not wait for
    own: str | None = None

    def refuse(self, name: str) -> str | None:
        if name in self.known or name in ENV.globals:
            return None
        if name in MAP_LOCALS:
            return f"{name!r} exists only inside {MAP_TYPE} nodes"
        if name == self.own:
            return f"{name!r} is this node's own output, which it cannot read"
        if name in self.elsewhere:
            return f"{name!r} is the output of a node this node does not wait for: add it to needs"
        return _unknown("variable", name, self.known)


def _variable_problems(
    spec: WorkflowSpec, where: Positions, types: Mapping[str, NodeType]
) -> Iterator[Problem]:
    for node in spec.nodes.values():
        kind = types.get(node.type)
        yield from _node_expressions(node, kind.raw if kind else (), _node_scope(spec, node), where)
    scope = _Scope((*spec.inputs, *spec.nodes, *GLOBALS))
    for path, text in _strings(spec.output, "output"):
        yield from _template_problems(path, text, scope, where)


def _node_scope(spec: WorkflowSpec, node: NodeSpec) -> _Scope:
    upstream = _upstream(spec, node.id)
    extra = MAP_LOCALS if node.type == MAP_TYPE else ()
    readable = [node_id for node_id in spec.nodes if node_id in upstream and node_id != node.id]
    known = (*spec.inputs, *readable, *GLOBALS, *extra)
    return _Scope(known, frozenset(spec.nodes) - upstream, node.id)


def _node_expressions(
    node: NodeSpec, raw: Sequence[str], scope: _Scope, where: Positions
) -> Iterator[Problem]:
    for name, value in node.params.items():
        for path, text in _strings(value, f"nodes.{node.id}.{name}"):
            # A raw string is a bare expression; inside a raw mapping (map's node) are templates.
            template = _as_template(text) if name in raw and isinstance(value, str) else text
            yield from _template_problems(path, template, scope, where)
    if node.when is not None:
        when = _as_template(node.when)
        yield from _template_problems(f"nodes.{node.id}.when", when, scope, where)


def _as_template(expression: str) -> str:
    """A bare expression (``score > 3``) as the template that prints it."""
    return expression if is_template(expression) else "{{ " + expression + " }}"


def _template_problems(
    path: str, template: str, scope: _Scope, where: Positions
) -> Iterator[Problem]:
    if not is_template(template):
        return
    try:
        names = names_used(template)
        unsafe = unsafe_attributes(template)
    except ExpressionError as exc:
        yield where.problem(path, f"invalid expression: {exc.reason}")
        return
    for attribute in sorted(unsafe):
        yield where.problem(path, f"expressions may not use {attribute!r}")
    for name in sorted(names):
        refusal = scope.refuse(name)
        if refusal:
            yield where.problem(path, refusal)


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string inside ``value``, with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


# Inputs and tests.


def _input_problems(spec: WorkflowSpec, where: Positions) -> Iterator[Problem]:
    for name, declared in spec.inputs.items():
        message = _wrong_default(declared)
        if message:
            yield where.problem(f"inputs.{name}.default", message)


def _wrong_default(declared: InputSpec) -> str | None:
    """A default is used as written, so text is not converted the way a command's is."""
    default = declared.default
    if default is None:
        return None
    if isinstance(default, str) and declared.type != "string":
        return f"expected {declared.type}, got {_shown(default)}"
    return _uncoercible(declared, default)


def _uncoercible(declared: InputSpec, value: Any) -> str | None:
    """Why a test's input would be refused: tests give inputs as a command line would."""
    try:
        coerce(declared, value)
    except ValueError as exc:
        return str(exc)
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _test_problems(spec: WorkflowSpec, where: Positions) -> Iterator[Problem]:
    names: set[str] = set()
    for index, case in enumerate(spec.tests):
        path = f"tests[{index}]"
        if case.name in names:
            yield where.problem(f"{path}.name", f"another test is also named {case.name!r}")
        names.add(case.name)
        yield from _test_input_problems(spec, case, path, where)
        yield from _node_keys(spec, case.mocks, f"{path}.mocks", where)
        yield from _expect_problems(spec, case.expect, f"{path}.expect", where)


def _test_input_problems(
    spec: WorkflowSpec, case: TestCase, path: str, where: Positions
) -> Iterator[Problem]:
    for name, value in case.inputs.items():
        declared = spec.inputs.get(name)
        if declared is None:
            message: str | None = _unknown("input", name, list(spec.inputs))
        else:
            message = _uncoercible(declared, value)
        if message:
            yield where.problem(f"{path}.inputs.{name}", message)
    for name, declared in spec.inputs.items():
        if declared.is_required and name not in case.inputs:
            yield where.problem(f"{path}.inputs", f"missing required input {name!r}")


def _node_keys(
    spec: WorkflowSpec, mapping: Mapping[str, Any], path: str, where: Positions
) -> Iterator[Problem]:
    for node_id in mapping:
        if node_id not in spec.nodes:
            yield where.problem(f"{path}.{node_id}", _unknown("node", node_id, list(spec.nodes)))


def _expect_problems(
    spec: WorkflowSpec, expect: Mapping[str, Any], path: str, where: Positions
) -> Iterator[Problem]:
    for key in expect:
        if key not in EXPECT_KEYS:
            yield where.problem(f"{path}.{key}", _unknown("key", key, EXPECT_KEYS))
    status = expect.get("status", STATUSES[0])
    if status not in STATUSES:
        message = f"expected 'succeeded' or 'failed', got {_shown(status)}"
        yield where.problem(f"{path}.status", message)
    nodes = expect.get("nodes", {})
    if isinstance(nodes, dict):
        yield from _node_keys(spec, nodes, f"{path}.nodes", where)
    else:
        message = f"expected a mapping of node id to expected output, got {_shown(nodes)}"
        yield where.problem(f"{path}.nodes", message)


# Schedule and permissions.


def _schedule_problems(spec: WorkflowSpec, where: Positions) -> Iterator[Problem]:
    if spec.schedule is None:
        return
    zone = _zone(spec.schedule.timezone)
    if zone is None:
        message = f"unknown time zone {spec.schedule.timezone!r}"
        yield where.problem("schedule.timezone", message)
    never = _cron_problem(spec.schedule.cron, zone or UTC)
    if never:
        yield where.problem("schedule.cron", never)
    for name, declared in spec.inputs.items():
        if declared.is_required:
            message = "required, but a scheduled run has no one to give it: give it a default"
            yield where.problem(f"inputs.{name}", message)
    for node_id in unaddressed_replies(spec):
        message = (
            "a scheduled run has no conversation to answer in: "
            "say where to post with to: {channel, chat}"
        )
        yield where.problem(f"nodes.{node_id}", message)


def unaddressed_replies(spec: WorkflowSpec) -> list[str]:
    """The reply nodes that post into the conversation that started the run: a run that no
    conversation started (a schedule, a webhook) has nowhere to send them."""
    return [
        node_id
        for node_id, node in spec.nodes.items()
        if node.type == "reply" and node.params.get("to") is None
    ]


def _zone(name: str) -> tzinfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _cron_problem(expression: str, zone: tzinfo) -> str | None:
    start = CRON_START.replace(tzinfo=zone)
    try:
        fires: datetime = croniter(
            expression, start, max_years_between_matches=CRON_HORIZON_YEARS
        ).get_next(datetime)
    except CroniterBadDateError:
        return f"{expression!r} never fires"
    except (ValueError, KeyError) as exc:
        return (
            f"{expression!r} is not a cron expression ({str(exc).rstrip('.')}): "
            "write 'minute hour day-of-month month day-of-week', e.g. '0 9 * * 1-5'"
        )
    horizon = start.replace(year=start.year + CRON_HORIZON_YEARS)
    return None if fires <= horizon else f"{expression!r} never fires"


def _allow_problems(spec: WorkflowSpec, where: Positions) -> Iterator[Problem]:
    for key in spec.allow:
        if key not in ALLOW_KEYS:
            yield where.problem(f"allow.{key}", _unknown("key", key, ALLOW_KEYS))


# Messages.


def _unknown(kind: str, name: str, known: Sequence[str]) -> str:
    """``unknown node type 'htp' — did you mean 'http'?``, or the list of what is known."""
    close = closest(name, known)
    if close:
        return f"unknown {kind} {name!r} — did you mean {close!r}?"
    return f"unknown {kind} {name!r}; known: {_listed(known)}"


def _listed(names: Iterable[str]) -> str:
    return ", ".join(names) or "none"


def _in_order(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda problem: problem.line or 0)
