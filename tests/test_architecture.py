"""Dependencies point one way, and third-party SDKs stay inside their boundary modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "adapters", "personas", "workflows", "worker")
# Who may import whom (composition roots excepted): adapters → bot ← personas, workflows ← worker.
ALLOWED = {
    "bot": {"bot", "migrations"},
    "adapters": {"bot", "adapters"},
    "personas": {"bot", "personas"},
    "workflows": {"bot", "personas", "workflows"},
    "worker": {"bot", "adapters", "personas", "workflows", "worker"},
}
COMPOSITION_ROOTS = {
    "bot/app.py",
    "bot/cli.py",
    "bot/cli_slack.py",
    "bot/cli_workflows.py",
    "worker/settings.py",
}
# SDK → the only modules allowed to import it.
BOUNDARIES = {
    "litellm": {"bot/llm.py"},
    "openai": {"bot/llm.py"},
    "slack_bolt": {"adapters/slack.py"},
    "slack_sdk": {"adapters/slack.py"},
    "discord": {"adapters/discord.py"},
    "aiogram": {"adapters/telegram.py"},
    "imapclient": {"adapters/email.py"},
    "aiosmtplib": {"adapters/email.py"},
    "playwright": {"bot/tools/browser.py"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _sources() -> list[tuple[str, Path]]:
    return [
        (path.relative_to(ROOT).as_posix(), path)
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


def test_packages_depend_one_way() -> None:
    wrong = []
    for name, path in _sources():
        if name in COMPOSITION_ROOTS:
            continue
        package = name.split("/")[0]
        for module in _imports(path) & set(PACKAGES):
            if module not in ALLOWED[package]:
                wrong.append(f"{name} imports {module}")
    assert wrong == []


def test_sdks_stay_in_their_boundary_modules() -> None:
    wrong = [
        f"{name} imports {module}"
        for name, path in _sources()
        for module in _imports(path) & set(BOUNDARIES)
        if name not in BOUNDARIES[module]
    ]
    assert wrong == []


# What adapters may use of bot/: the channel seam and plain helpers, never the modules that
# hold SQL or run turns (an adapter is given what it needs through bot.channels.Wiring).
ADAPTER_SEAM = {
    "bot.channels",
    "bot.messages",
    "bot.errors",
    "bot.replies",
    "bot.health",
    "bot.netguard",
    "bot.values",
}


def test_adapters_use_only_the_channel_seam_of_bot() -> None:
    wrong = []
    for name, path in _sources():
        if not name.startswith("adapters/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for module in _modules(node):
                if module.split(".")[0] == "bot" and module not in ADAPTER_SEAM:
                    wrong.append(f"{name} imports {module}")
    assert wrong == []


def _modules(node: ast.AST) -> list[str]:
    """The modules an import statement names (``from bot import x`` names ``bot.x``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module == "bot":
            return [f"bot.{alias.name}" for alias in node.names]
        return [node.module]
    return []
