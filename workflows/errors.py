"""Workflow errors: all carry the sentence a person reads, and where it happened."""

from __future__ import annotations

from bot.errors import UserFacingError


class WorkflowError(UserFacingError):
    def __init__(self, text: str, *, node_id: str | None = None) -> None:
        super().__init__(text)
        self.node_id = node_id


class ExpressionError(WorkflowError):
    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f"the expression {expression!r} failed: {reason}")
        self.expression = expression
        self.reason = reason


class NodeFailed(WorkflowError):
    """A node could not do its work; ``retryable`` says whether trying again may help."""

    def __init__(self, text: str, *, retryable: bool = False) -> None:
        super().__init__(text)
        self.retryable = retryable
