"""The node types, one registry. A workflow's ``type:`` names one of these."""

from __future__ import annotations

from workflows.nodes.approval import Approval
from workflows.nodes.ask import Ask
from workflows.nodes.base import NodeType
from workflows.nodes.basic import Condition, Delay, Switch, Template
from workflows.nodes.compose import Map, Persona, Subflow
from workflows.nodes.files import File
from workflows.nodes.http import HTTP
from workflows.nodes.llm import LLM
from workflows.nodes.reply import Reply
from workflows.nodes.tool import Tool

NODE_TYPES: dict[str, NodeType] = {
    node.name: node
    for node in (
        Template(),
        Condition(),
        Switch(),
        Delay(),
        LLM(),
        HTTP(),
        File(),
        Reply(),
        Tool(),
        Approval(),
        Ask(),
        Persona(),
        Subflow(),
        Map(),
    )
}
