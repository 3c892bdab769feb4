"""The README's examples work as written."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from personas.spec import PersonaSpec
from workflows.testing import run_tests
from workflows.validate import load

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```yaml\n(.*?)```", README, re.S)


def test_the_quickstart_is_the_two_commands() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    assert "make run" in quickstart and "make test" in quickstart


async def test_the_workflow_example_validates_and_its_tests_pass() -> None:
    (example,) = [block for block in BLOCKS if "nodes:" in block]
    results = await run_tests(load(example, source="README.md"))
    assert results and all(r.passed for r in results)


def test_the_persona_example_is_a_valid_persona() -> None:
    (example,) = [block for block in BLOCKS if "system_prompt:" in block]
    assert PersonaSpec.model_validate(yaml.safe_load(example)).name == "analyst"


def test_every_setting_is_documented() -> None:
    from bot.config import Settings

    for name, field in Settings.model_fields.items():
        variable = (
            str(field.validation_alias.choices[0])  # type: ignore[union-attr]
            if field.validation_alias
            else f"SWITCHBOARD_{name.upper()}"
        )
        assert f"`{variable}`" in README, f"README does not document {variable}"
