"""The template library: ready workflows a person copies and adapts (workflows/library)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot import yamlsafe
from bot.names import closest
from workflows.errors import WorkflowError

LIBRARY = Path(__file__).parent / "library"


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    command: str | None
    path: Path

    @property
    def source(self) -> str:
        return self.path.read_text(encoding="utf-8")


def available() -> list[Template]:
    found = []
    for path in sorted(LIBRARY.glob("*.yaml")):
        document = yamlsafe.load(yamlsafe.read_text(path))
        found.append(
            Template(
                name=document["name"],
                description=" ".join(str(document.get("description", "")).split()),
                command=document.get("command"),
                path=path,
            )
        )
    return found


def get(name: str) -> Template:
    templates = {t.name: t for t in available()}
    if name in templates:
        return templates[name]
    close = closest(name, templates)
    hint = f" Did you mean {close}?" if close else ""
    raise WorkflowError(f"There is no template called '{name}'.{hint} See /templates.")


def install(template: Template, config_dir: Path) -> Path:
    """Copy the template into the config dir, where it can be edited and is loaded on start."""
    folder = config_dir / "workflows"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{template.name}.yaml"
    if not target.exists():
        target.write_text(template.source, encoding="utf-8")
    return target
