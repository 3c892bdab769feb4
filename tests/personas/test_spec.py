"""Persona files: the shipped ones, overrides from the config dir, and clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.app import Runtime, prepare_storage
from personas.spec import PersonaSpecError, discover, load_file
from tests.bot.test_yamlsafe import BRACKETS, LAUGHS
from tests.fakes.llm_server import FakeLLM
from tests.support import reply_to


def test_three_personas_ship_and_assistant_is_one(tmp_path: Path) -> None:
    found, problems = discover(tmp_path)

    assert sorted(found) == ["assistant", "coder", "writer"]
    assert problems == []


def test_a_broken_file_is_reported_with_its_path_and_field(tmp_path: Path) -> None:
    broken = tmp_path / "personas" / "broken.yaml"
    broken.parent.mkdir()
    broken.write_text("name: Bad Name\nsystem_prompt: hi\ntemperature: 9\n")

    with pytest.raises(PersonaSpecError) as caught:
        load_file(broken)
    message = str(caught.value)
    assert message.startswith(str(broken))
    assert "name: Value error, use lowercase letters" in message
    assert "temperature: Input should be less than or equal to 2" in message
    found, problems = discover(tmp_path)
    assert sorted(found) == ["assistant", "coder", "writer"] and len(problems) == 1


def test_unknown_keys_and_non_mappings_are_refused(tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: x\nsystem_prompt: hi\nmodle: gpt\n")
    listing = tmp_path / "list.yaml"
    listing.write_text("- name: x\n")

    with pytest.raises(PersonaSpecError, match="modle: Extra inputs are not permitted"):
        load_file(typo)
    with pytest.raises(PersonaSpecError, match="expected a mapping"):
        load_file(listing)


def test_a_yaml_bomb_is_reported_with_its_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "laughs.yaml").write_text(f"name: laughs\nsystem_prompt: hi\n{LAUGHS}")
    (folder / "deep.yaml").write_text(f"name: deep\nsystem_prompt: {BRACKETS}\n")

    found, problems = discover(tmp_path)

    assert sorted(found) == ["assistant", "coder", "writer"]
    assert problems[0].startswith(f"{folder / 'deep.yaml'}:2: nested more than 100 levels")
    assert problems[1].startswith(f"{folder / 'laughs.yaml'}:")
    assert "the aliases here would expand to more than 10,000" in problems[1]


async def test_up_skips_bombs_in_the_config_folder_naming_file_and_line(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    config = runtime.core.settings.resolved_config_dir
    (config / "personas").mkdir(parents=True)
    (config / "workflows").mkdir()
    (config / "personas" / "laughs.yaml").write_text(f"name: laughs\nsystem_prompt: hi\n{LAUGHS}")
    (config / "workflows" / "laughs.yaml").write_text(f"name: laughs\nnodes: {{}}\n{LAUGHS}")
    (config / "workflows" / "deep.yaml").write_text(f"name: deep\nnodes: {{}}\nx: {BRACKETS}\n")
    (config / "personas" / "pirate.yaml").write_text("name: pirate\nsystem_prompt: Arr.\n")

    with caplog.at_level(logging.WARNING, logger="bot.app"):
        await prepare_storage(runtime.core)

    warnings = sorted(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert len(warnings) == 3
    assert warnings[0].startswith(f"persona skipped: {config / 'personas' / 'laughs.yaml'}:")
    assert warnings[1].startswith(
        f"workflow skipped: {config / 'workflows' / 'deep.yaml'}:3: nested more than 100"
    )
    assert warnings[2].startswith(f"workflow skipped: {config / 'workflows' / 'laughs.yaml'}:")
    assert "pirate — " in (await reply_to(runtime, "/persona list")).text


async def test_config_dir_personas_are_loaded_and_override_by_name(
    runtime: Runtime, llm: FakeLLM
) -> None:
    folder = runtime.core.settings.resolved_config_dir / "personas"
    folder.mkdir(parents=True)
    (folder / "assistant.yaml").write_text(
        "name: assistant\ndescription: Terse.\nsystem_prompt: Answer in five words.\n"
        "model: openai/other-model\ntemperature: 0.1\nmax_tokens: 50\n"
    )
    (folder / "pirate.yaml").write_text("name: pirate\nsystem_prompt: Talk like a pirate.\n")
    await prepare_storage(runtime.core)

    assert "pirate — " in (await reply_to(runtime, "/persona list")).text
    await reply_to(runtime, "ahoy")
    sent = llm.requests[-1]
    assert sent["model"] == "other-model"
    assert sent["messages"][0]["content"] == "Answer in five words."
    assert (sent["temperature"], sent["max_tokens"]) == (0.1, 50)
