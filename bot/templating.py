"""Jinja2 templates with bounds on what grows, and a test for what is provably cheap.

Jinja2's sandbox keeps a template away from Python's internals, not from the machine: a
nested loop runs for hours, ``'a' * 10**8`` builds 100 MB. ``BoundedEnvironment`` refuses
at once, with a sentence naming the bound, a ``range`` longer than ``MAX_RANGE``,
repetition (``*``), joining (``+``) or a namespace value that would pass the output bound,
and a power past ``MAX_DIGITS`` digits; ``render_here`` counts output while it is made.
What no check can catch in advance (loops that run long, values that fill memory) is left
to the process boundary in bot/sandbox.py, which renders here only what ``shape`` proves
cheap: names, attributes, items, constants, comparisons, boolean and conditional
expressions, and a few filters linear in their input.

This module is what a sandbox's child process imports: it stays free of asyncio and pydantic.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import Template, TemplateExpression
from jinja2.meta import TrackingCodeGenerator
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from bot import replies
from bot.errors import BadTemplate, LimitExceeded, UserFacingError

Kind = Literal["text", "expression"]
Compiled = Template | TemplateExpression
T = TypeVar("T")

MAX_RANGE = 100_000
MAX_DIGITS = 4_300  # as many as Python turns into text by default
CACHED = 512  # compiled templates kept per process


# --- the environment ------------------------------------------------------------------------


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with bounds on what grows: ranges, repetition, joining, powers, and the
    values a namespace keeps across loop iterations."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def __init__(self, max_output: int) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False)
        self.max_output = max_output
        self.globals["range"] = bounded_range
        self.globals["namespace"] = functools.partial(BoundedNamespace, max_output)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            check_size(_repeated_size(left, right), self.max_output)
        elif operator == "+":
            check_size(_size(left) + _size(right), self.max_output)
        elif _power_digits(left, right) > MAX_DIGITS:
            raise LimitExceeded(replies.template_number_too_big(MAX_DIGITS))
        return super().call_binop(context, operator, left, right)


class BoundedNamespace(Namespace):
    """A ``namespace()`` that refuses to keep a value past the output bound: a loop that
    doubles a string fails at the bound, not when memory runs out."""

    def __init__(self, max_output: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "_max_output", max_output)

    def __setitem__(self, name: str, value: Any) -> None:
        check_size(_size(value), object.__getattribute__(self, "_max_output"))
        super().__setitem__(name, value)


def bounded_range(*args: int) -> range:
    counted = range(*args)
    if len(counted) > MAX_RANGE:
        raise LimitExceeded(replies.template_range_too_long(MAX_RANGE, len(counted)))
    return counted


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple) else 0


def _repeated_size(left: Any, right: Any) -> int:
    if isinstance(right, int) and not isinstance(right, bool):
        return _size(left) * right
    if isinstance(left, int) and not isinstance(left, bool):
        return _size(right) * left
    return 0


def _power_digits(base: Any, exponent: Any) -> float:
    """About how many digits ``base ** exponent`` has (0 for anything but integers)."""
    if not (isinstance(base, int) and isinstance(exponent, int)) or exponent <= 0:
        return 0
    return exponent * math.log10(abs(base)) if abs(base) > 1 else 0


def check_size(size: int, limit: int) -> None:
    if size > limit:
        raise LimitExceeded(replies.template_too_big(limit))


# Only for parsing and the names it knows (validation, and what is cheap); each Sandbox and
# child renders with an environment of its own bounds.
ENV = BoundedEnvironment(max_output=0)


# --- what is cheap --------------------------------------------------------------------------

_PLAIN = frozenset(
    {
        nodes.Template,
        nodes.Output,
        nodes.TemplateData,
        nodes.If,
        nodes.Name,
        nodes.Const,
        nodes.Getattr,
        nodes.Getitem,
        nodes.Slice,
        nodes.Compare,
        nodes.Operand,
        nodes.And,
        nodes.Or,
        nodes.Not,
        nodes.Neg,
        nodes.Pos,
        nodes.CondExpr,
        nodes.List,
        nodes.Tuple,
        nodes.Dict,
        nodes.Pair,
        nodes.Concat,  # the sum of its parts' sizes
        nodes.Add,
        nodes.Sub,
    }
)
# Filters whose output is at most a constant times their input.
_LINEAR_FILTERS = frozenset(
    {"default", "d", "lower", "upper", "trim", "length", "count", "first", "last", "int"}
    | {"float", "round", "abs", "capitalize", "title"}
)
# ... of which these make it larger: two nested could multiply it, so only one may.
_GROWING_FILTERS = frozenset({"join", "tojson", "string", "e", "escape"})
_JOIN_SEPARATOR = 16  # characters
_TESTS = frozenset(
    {"defined", "undefined", "none", "string", "number", "integer", "float", "boolean"}
    | {"true", "false", "mapping", "sequence", "iterable", "eq", "equalto", "ne", "lt"}
    | {"lessthan", "le", "gt", "greaterthan", "ge", "in", "lower", "upper", "odd", "even"}
)


@dataclass(frozen=True)
class Shape:
    """What parsing a template tells before it runs: whether it is provably cheap, and the
    names it reads (only those are sent to a child)."""

    cheap: bool
    names: frozenset[str]


@functools.lru_cache(maxsize=CACHED)
def shape(kind: Kind, source: str) -> Shape:
    tree = parse(kind, source)
    return Shape(_growth(tree) is not None, frozenset(undeclared(tree)))


def parse(kind: Kind, source: str) -> nodes.Template:
    """The syntax tree (an expression as a one-output template), or ``BadTemplate``."""
    return attempt(lambda: _parse(kind, source))


def _parse(kind: Kind, source: str) -> nodes.Template:
    if kind == "text":
        return ENV.parse(source)
    parser = Parser(ENV, source, state="variable")
    expression = parser.parse_expression()
    if not parser.stream.eos:
        lineno = parser.stream.current.lineno
        raise TemplateSyntaxError("chunk after expression", lineno, None, None)
    tree = nodes.Template([nodes.Output([expression])], lineno=1)
    tree.set_environment(ENV)
    return tree


def undeclared(tree: nodes.Template) -> set[str]:
    """The names a template reads from its variables (``jinja2.meta``'s answer). Jinja's
    own finder runs the code generator, which folds constants: ``'a'|center(10**9)`` would
    be built right here, so this one marks every frame volatile, and nothing is folded."""
    finder = _NameFinder(ENV)
    attempt(lambda: finder.visit(tree))
    return finder.undeclared_identifiers


class _NameFinder(TrackingCodeGenerator):
    def __init__(self, environment: BoundedEnvironment) -> None:
        CodeGenerator.__init__(self, environment, "<names>", "<names>", optimized=False)
        self.undeclared_identifiers: set[str] = set()

    def enter_frame(self, frame: Frame) -> None:
        frame.eval_ctx.volatile = True
        super().enter_frame(frame)


def _growth(node: nodes.Node) -> int | None:
    """How many growing filters nest inside ``node``, at most one; None: not provably cheap."""
    own = _own_growth(node)
    if own is None:
        return None
    deepest = 0
    for child in node.iter_child_nodes():
        below = _growth(child)
        if below is None:
            return None
        deepest = max(deepest, below)
    return own + deepest if own + deepest <= 1 else None


def _own_growth(node: nodes.Node) -> int | None:
    if type(node) in _PLAIN:
        return 0
    if isinstance(node, nodes.Test):
        return 0 if node.name in _TESTS and _plain_arguments(node) else None
    if not isinstance(node, nodes.Filter) or node.node is None or not _plain_arguments(node):
        return None
    if node.name in _LINEAR_FILTERS:
        return 0
    if node.name == "join":
        return 1 if _short_separator(node.args) else None
    return 1 if node.name in _GROWING_FILTERS and not node.args else None


def _plain_arguments(node: nodes.Filter | nodes.Test) -> bool:
    return not (node.kwargs or node.dyn_args or node.dyn_kwargs)


def _short_separator(args: list[nodes.Expr]) -> bool:
    if not args:
        return True
    [separator] = args if len(args) == 1 else [None]
    return (
        isinstance(separator, nodes.Const)
        and isinstance(separator.value, str)
        and len(separator.value) <= _JOIN_SEPARATOR
    )


# --- rendering -----------------------------------------------------------------------------


def attempt(work: Callable[[], T]) -> T:
    """Run template work, turning whatever it raises into the sentence a person reads."""
    try:
        return work()
    except UserFacingError:
        raise
    except TemplateError as exc:
        raise BadTemplate(str(exc.message or exc)) from exc
    except RecursionError as exc:
        raise BadTemplate("it nests too deeply") from exc
    except OverflowError as exc:
        raise LimitExceeded(replies.template_number_too_big(MAX_DIGITS)) from exc
    except MemoryError:
        raise
    except Exception as exc:  # 1/0, 'a' - 1: the template's mistake, said plainly
        raise BadTemplate(str(exc) or type(exc).__name__) from exc


def compile_template(env: BoundedEnvironment, kind: Kind, source: str) -> Compiled:
    if kind == "text":
        return env.from_string(source)
    return env.compile_expression(source, undefined_to_none=False)


def render_here(compiled: Compiled, variables: Mapping[str, Any], max_output: int) -> Any:
    """Render in this process: a template's text (counted as it is made), or an
    expression's value."""
    if isinstance(compiled, TemplateExpression):
        return attempt(lambda: _value(compiled, variables))
    return attempt(lambda: _counted(compiled.generate(variables), max_output))


def _value(expression: TemplateExpression, variables: Mapping[str, Any]) -> Any:
    value = expression(variables)
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()  # a missing name, or one the sandbox refused
    return value


def _counted(parts: Iterable[str], limit: int) -> str:
    kept: list[str] = []
    size = 0
    for part in parts:
        size += len(part)
        check_size(size, limit)
        kept.append(part)
    return "".join(kept)


def compiler(env: BoundedEnvironment) -> Callable[[Kind, str], Compiled]:
    """``compile_template`` for ``env``, remembering the last ``CACHED`` templates."""
    return functools.lru_cache(maxsize=CACHED)(functools.partial(compile_template, env))
