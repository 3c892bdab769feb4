"""Persona files: one YAML document per persona, validated with messages that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot import yamlsafe
from bot.names import check_name
from bot.values import problems

LIBRARY = Path(__file__).parent / "library"


class PersonaSpecError(ValueError):
    pass


class PersonaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    system_prompt: str
    model: str | None = None
    fallbacks: list[str] = Field(default_factory=list)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, gt=0)
    greeting: str = ""
    tools: list[str] = Field(default_factory=list)
    # Who may talk to it: users, roles, channels, chats, workspaces (as a workflow's allow:).
    allow: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        from bot.people import ALLOW_KEYS

        for key in value:
            if key not in ALLOW_KEYS:
                raise ValueError(f"allow: unknown key {key!r}; use {', '.join(ALLOW_KEYS)}")
        return value

    @field_validator("tools")
    @classmethod
    def _tools(cls, value: list[str]) -> list[str]:
        from bot.tools import ToolError, catalog

        for name in value:
            try:
                catalog().get(name)
            except ToolError as exc:
                raise ValueError(exc.text) from None
        return value


def load_file(path: Path) -> PersonaSpec:
    try:
        data: Any = yamlsafe.load(yamlsafe.read_text(path))
    except yaml.YAMLError as exc:
        raise PersonaSpecError(_yaml_problem(path, exc)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PersonaSpecError(f"{path}: cannot read persona file: {exc}") from exc
    if not isinstance(data, dict):
        raise PersonaSpecError(f"{path}: expected a mapping with name, system_prompt, …")
    try:
        return PersonaSpec.model_validate(data)
    except ValidationError as exc:
        raise PersonaSpecError(f"{path}: {problems(exc)}") from exc


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    """``file:line: problem``, the way workflow files are reported."""
    line, message = yamlsafe.describe(exc)
    return f"{path}:{line}: {message}" if line is not None else f"{path}: {message}"


def discover(config_dir: Path) -> tuple[dict[str, tuple[PersonaSpec, Path]], list[str]]:
    """Shipped personas, overridden by same-named files in ``config_dir/personas``."""
    found: dict[str, tuple[PersonaSpec, Path]] = {}
    problems: list[str] = []
    for folder in (LIBRARY, config_dir / "personas"):
        for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
            try:
                spec = load_file(path)
            except PersonaSpecError as exc:
                problems.append(str(exc))
                continue
            found[spec.name] = (spec, path)
    return found, problems
