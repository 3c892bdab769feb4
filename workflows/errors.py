"""Workflow errors: all carry the sentence a person reads."""

from __future__ import annotations

from bot.errors import UserFacingError


class WorkflowError(UserFacingError):
    pass


class InputsRefused(WorkflowError):
    """A run's inputs were refused; ``missing`` names the required ones not given."""

    def __init__(self, text: str, missing: tuple[str, ...]) -> None:
        super().__init__(text)
        self.missing = missing


class ExpressionError(WorkflowError):
    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f"the expression {expression!r} failed: {reason}")
        self.reason = reason


class NodeFailed(WorkflowError):
    """A node could not do its work; ``retryable`` says whether trying again may help."""

    def __init__(self, text: str, *, retryable: bool = False) -> None:
        super().__init__(text)
        self.retryable = retryable
