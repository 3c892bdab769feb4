"""Arithmetic a model can trust, evaluated from the syntax tree and never with ``eval``.

Only numbers, the arithmetic operators, a few functions from ``math`` and the constants
pi and e are understood; anything else is refused by name. Powers and integers are bounded
so that one short expression cannot keep a worker busy or fill its memory.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import Field

from bot.tools.base import ToolContext, ToolError, ToolParams, ToolResult

Number = int | float

MAX_EXPONENT = 1000
MAX_MAGNITUDE = 1e308  # about the largest float
MAX_DIGITS = 4300  # Python's own limit for turning an int into text (and so into JSON)
INT_LIMIT = 10**MAX_DIGITS
EXACT_FLOATS = 2**53  # floats up to here that are whole numbers are shown as ints

OPERATORS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "floor": math.floor,
    "ceil": math.ceil,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}
ALLOWED = "numbers, + - * / // % **, parentheses, pi, e and the functions " + ", ".join(FUNCTIONS)


class CalculateParams(ToolParams):
    expression: str = Field(
        max_length=500,
        description=(
            "An arithmetic expression, such as '(17.5 * 3) / 4' or 'sqrt(2) * pi'. "
            f"Allowed: {ALLOWED}."
        ),
    )


class Calculate:
    name: ClassVar[str] = "calculate"
    description: ClassVar[str] = (
        "Evaluate an arithmetic expression exactly; use it instead of doing sums in your head."
    )
    params: ClassVar[type[ToolParams]] = CalculateParams
    effects: ClassVar[bool] = False
    offline: ClassVar[bool] = True

    async def run(self, ctx: ToolContext, params: CalculateParams) -> ToolResult:
        result = evaluate(params.expression)
        return ToolResult(output={"expression": params.expression, "result": result})


def evaluate(expression: str) -> Number:
    """The value of ``expression``; ToolError says what in it cannot be computed."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:  # ValueError: an integer literal too long
        reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        raise ToolError(f"{expression!r} is not an arithmetic expression ({reason}).") from None
    try:
        value = _Evaluator(expression.strip()).visit(tree.body)
    except ZeroDivisionError:
        raise ToolError(f"division by zero in {expression!r}") from None
    except OverflowError:
        raise ToolError(_too_large(expression)) from None
    except RecursionError:
        raise ToolError(f"{expression!r} is nested too deeply; split it up.") from None
    return _shown(value)


class _Evaluator:
    """Walks the tree, computing each node it understands and refusing every other one."""

    def __init__(self, source: str) -> None:
        self.source = source

    def visit(self, node: ast.expr) -> Number:
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
            value = self.visit(node.operand)
            return -value if isinstance(node.op, ast.USub) else +value
        if isinstance(node, ast.BinOp):
            return self._binary(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Attribute):
            raise self._refuse(node, "is not allowed (no attribute access)")
        raise self._refuse(node, "is not allowed")

    def _constant(self, node: ast.Constant) -> Number:
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise self._refuse(node, "is not a number, and only numbers are allowed")
        return self._checked(node.value)

    def _name(self, node: ast.Name) -> Number:
        if node.id not in CONSTANTS:
            raise self._refuse(node, "is an unknown name: the only constants are pi and e")
        return CONSTANTS[node.id]

    def _binary(self, node: ast.BinOp) -> Number:
        apply = OPERATORS.get(type(node.op))
        if apply is None:
            hint = ": write ** for powers" if isinstance(node.op, ast.BitXor) else ""
            raise self._refuse(node, f"uses an operator that is not allowed{hint}")
        left, right = self.visit(node.left), self.visit(node.right)
        if isinstance(node.op, ast.Pow):
            self._check_power(node, left, right)
        return self._checked(apply(left, right), node)

    def _check_power(self, node: ast.BinOp, base: Number, exponent: Number) -> None:
        if base in (0, 1, -1) and exponent >= 0:
            return  # stays small however large the exponent
        if abs(exponent) > MAX_EXPONENT:
            raise self._refuse(node, f"has an exponent above {MAX_EXPONENT}")
        if base != 0 and exponent * math.log10(abs(base)) > math.log10(MAX_MAGNITUDE):
            raise ToolError(_too_large(self.source))

    def _call(self, node: ast.Call) -> Number:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS:
            raise self._refuse(node.func, "cannot be called: only " + ", ".join(FUNCTIONS))
        if node.keywords:
            raise self._refuse(node, "passes arguments by name: give them in order instead")
        args = [self.visit(arg) for arg in node.args]
        if name == "round" and len(args) == 2 and abs(args[1]) > MAX_DIGITS:
            # round(5, -10**9) would build 10**(10**9) first.
            raise self._refuse(node, f"rounds to more than {MAX_DIGITS} digits")
        try:
            return self._checked(FUNCTIONS[name](*args), node)
        except (TypeError, ValueError) as exc:
            raise self._refuse(node, f"cannot be computed ({exc})") from None

    def _checked(self, value: Any, node: ast.expr | None = None) -> Number:
        if isinstance(value, complex):
            raise ToolError(f"{self._text(node)} is not a real number (it is {value}).")
        if isinstance(value, float) and not math.isfinite(value):
            raise ToolError(_too_large(self.source))
        if isinstance(value, int) and abs(value) >= INT_LIMIT:
            raise ToolError(_too_large(self.source))
        return value  # type: ignore[no-any-return]

    def _refuse(self, node: ast.expr, problem: str) -> ToolError:
        return ToolError(f"{self._text(node)} {problem}. Allowed: {ALLOWED}.")

    def _text(self, node: ast.expr | None) -> str:
        segment = ast.get_source_segment(self.source, node) if node is not None else None
        return repr(segment or self.source)


def _too_large(expression: str) -> str:
    return (
        f"the result of {expression!r} is too large to compute "
        f"(more than {MAX_DIGITS} digits, or beyond {MAX_MAGNITUDE:g} for a decimal number)."
    )


def _shown(value: Number) -> Number:
    """Whole-number floats as ints (sqrt(16) is 4), as far as a float is exact."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= EXACT_FLOATS:
        return int(value)
    return value
