"""The shape of a workflow document (YAML or JSON).

```yaml
name: digest
description: Summarise a channel.
command: /digest                 # optional: starts the workflow from any chat
schedule: {cron: "0 9 * * 1-5", timezone: Europe/Berlin}   # optional
inputs:
  last: {type: string, default: 24h, description: how far back}
nodes:
  fetch:   {type: http, url: "https://example.org/api?since={{ last }}"}
  summary: {type: llm, needs: [fetch], prompt: "Summarise: {{ fetch.body }}"}
  post:    {type: reply, needs: [summary], text: "{{ summary }}",
            to: {channel: slack, chat: C0DIGEST}}   # a scheduled run has no chat of its own
output: "{{ summary }}"
limits: {max_steps: 100, max_run_seconds: 600, node_timeout: 120, retries: 2}
webhook: {key_header: X-GitHub-Delivery}   # optional: one run per delivery id
tests:
  - name: summarises
    inputs: {last: 1h}
    mocks: {fetch: {body: "…"}, summary: "a short summary"}
    expect: {output: "a short summary"}
```

Every key of a node other than ``type``, ``needs``, ``when`` and ``description`` is a
parameter of its node type; node types validate their own parameters.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.names import check_name

NODE_ID = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
InputType = Literal["string", "integer", "number", "boolean", "list", "object"]
NODE_KEYS = ("type", "needs", "when", "description")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    type: InputType = "string"
    default: Any = None
    required: bool | None = None  # default: required when there is no default
    description: str = ""

    @property
    def is_required(self) -> bool:
        return self.default is None if self.required is None else self.required


class NodeSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    needs: tuple[str, ...] = ()
    when: str | None = None  # an expression: the node runs only when it is true
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)

    @staticmethod
    def from_document(node_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """A node as written (type, needs, parameters side by side) in this model's shape;
        pydantic then checks it and reports errors under ``nodes.<id>``."""
        needs = body.get("needs", ())
        return {
            "id": node_id,
            "type": body.get("type", ""),
            "needs": [needs] if isinstance(needs, str) else needs,
            "when": body.get("when"),
            "description": body.get("description", ""),
            "params": {k: v for k, v in body.items() if k not in NODE_KEYS},
        }


class Schedule(_Strict):
    cron: str
    timezone: str = "UTC"


class Webhook(_Strict):
    """Where a webhook delivery carries its own id, so a redelivery starts no second run
    (the ``Idempotency-Key`` header always counts): a header such as GitHub's
    ``X-GitHub-Delivery``, or a top-level field of the JSON body such as Stripe's ``id``."""

    key_header: str | None = None
    key_field: str | None = None


class Limits(_Strict):
    max_steps: int = Field(default=200, gt=0)
    max_run_seconds: float = Field(default=3600, gt=0)
    node_timeout: float = Field(default=300, gt=0)
    retries: int = Field(default=0, ge=0, le=20)
    retry_backoff: float = Field(default=2.0, ge=0)
    max_parallel: int = Field(default=8, gt=0)
    max_depth: int = Field(default=5, gt=0)  # nested workflow nodes
    budget_usd: float | None = Field(default=None, ge=0)


class TestCase(_Strict):
    name: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    mocks: dict[str, Any] = Field(default_factory=dict)
    expect: dict[str, Any] = Field(default_factory=dict)


class WorkflowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    command: str | None = None
    schedule: Schedule | None = None
    webhook: Webhook = Field(default_factory=Webhook)
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    nodes: dict[str, NodeSpec]
    output: Any = None
    limits: Limits = Field(default_factory=Limits)
    tests: list[TestCase] = Field(default_factory=list)
    allow: dict[str, list[str]] = Field(default_factory=dict)  # users / roles / channels

    @model_validator(mode="before")
    @classmethod
    def _nodes_from_mapping(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("nodes"), dict):
            nodes = {
                node_id: NodeSpec.from_document(node_id, body) if isinstance(body, dict) else body
                for node_id, body in data["nodes"].items()
            }
            data = {**data, "nodes": nodes}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^/[a-z][a-z0-9_-]{0,31}$", value):
            raise ValueError("a command looks like /digest: a slash, then lowercase letters")
        return value

    @field_validator("nodes")
    @classmethod
    def _node_ids(cls, nodes: dict[str, NodeSpec]) -> dict[str, NodeSpec]:
        if not nodes:
            raise ValueError("a workflow needs at least one node")
        for node_id in nodes:
            if not NODE_ID.match(node_id):
                raise ValueError(
                    f"node id {node_id!r}: use lowercase letters, digits and '_' "
                    "(ids are variable names in expressions)"
                )
        return nodes
