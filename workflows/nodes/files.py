"""Read and write files in the run's own workspace; nothing outside it is reachable."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from bot.errors import UserFacingError
from bot.files import read_path
from bot.messages import Attachment
from workflows.errors import NodeFailed
from workflows.nodes.base import NodeContext, NodeResult, Params


class FileParams(Params):
    action: Literal["read", "write", "append"] = "write"
    path: str
    content: str = ""


class File:
    name: ClassVar[str] = "file"
    params: ClassVar[type[Params]] = FileParams
    raw: ClassVar[tuple[str, ...]] = ()
    pure: ClassVar[bool] = False

    async def run(self, ctx: NodeContext, params: FileParams) -> NodeResult:
        path = inside(ctx.workspace, params.path)
        if params.action == "read":
            if not path.is_file():
                raise NodeFailed(f"there is no file {params.path!r} in this run's workspace")
            return NodeResult(output=path.read_text(encoding="utf-8", errors="replace"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a" if params.action == "append" else "w", encoding="utf-8") as handle:
            handle.write(params.content)
        return NodeResult(output={"path": params.path, "size": path.stat().st_size})


def inside(workspace: Path, name: str) -> Path:
    """``name`` under ``workspace``, refusing absolute paths and any way out (``..``, links)."""
    path = (workspace / name).resolve()
    if not path.is_relative_to(workspace.resolve()) or Path(name).is_absolute():
        raise NodeFailed(f"{name!r} is outside this run's workspace")
    return path


def read_attachment(workspace: Path, name: str) -> Attachment:
    path = inside(workspace, name)
    if not path.is_file():
        raise NodeFailed(f"there is no file {name!r} in this run's workspace to attach")
    try:
        return read_path(path)
    except UserFacingError as exc:
        raise NodeFailed(exc.text) from exc
