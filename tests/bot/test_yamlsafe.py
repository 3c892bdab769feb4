"""YAML documents are read within bounds: bombs are refused at a line, ordinary ones are not."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from yaml.composer import ComposerError

from bot import yamlsafe
from bot.yamlsafe import TooLarge

LEVELS = "abcdefghi"
# Nine levels of nine aliases each: 72 aliases, a billion strings once written out.
LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{','.join([f'*{below}'] * 9)}]\n"
    for below, name in itertools.pairwise(LEVELS)
)
# Merge keys copy the pairs they merge: doubling a mapping at each level.
MERGES = "a0: &a0 {x: 1, y: 2}\n" + "".join(
    f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}], k{i}: {i}}}\n" for i in range(1, 40)
)
BRACKETS = "[" * 2000 + "]" * 2000


def refused(text: str) -> TooLarge:
    """The refusal, which must come fast: a bomb gets seconds at most, never minutes."""
    started = time.monotonic()
    with pytest.raises(TooLarge) as caught:
        yamlsafe.compose(text)
    assert time.monotonic() - started < 5
    return caught.value


def test_a_billion_laughs_is_refused_at_its_line() -> None:
    assert len(LAUGHS) < 600
    line, message = yamlsafe.describe(refused(LAUGHS))

    assert line is not None and 3 <= line <= 9
    assert message.startswith("the aliases here would expand to more than 10,000 extra values")


def test_merge_keys_that_double_a_mapping_are_refused() -> None:
    line, message = yamlsafe.describe(refused(MERGES))

    assert line is not None and "would expand to more than 10,000" in message


def test_too_many_aliases_are_refused() -> None:
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]\n"

    assert yamlsafe.describe(refused(text)) == (
        2,
        f"more than {yamlsafe.MAX_ALIASES} aliases (*name) in one document",
    )


def test_deep_nesting_is_refused_without_a_recursion_error() -> None:
    line, message = yamlsafe.describe(refused(BRACKETS))

    assert (line, message) == (1, "nested more than 100 levels deep")


def test_aliases_that_nest_too_deep_are_refused() -> None:
    deep = "[" * 90 + "x" + "]" * 90
    text = f"a: &a {deep}\nb: &b {'[' * 20}*a{']' * 20}\n"

    assert yamlsafe.describe(refused(text))[1].startswith("aliases here nest the values more")


def test_an_alias_inside_itself_is_refused() -> None:
    with pytest.raises(ComposerError, match="an alias contains itself"):
        yamlsafe.compose("a: &a [1, *a]\n")


def test_a_document_too_long_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    text = "x: " + "y" * yamlsafe.MAX_CHARS
    big = tmp_path / "big.yaml"
    big.write_text(text)

    assert "may have at most 1,000,000 characters" in yamlsafe.describe(refused(text))[1]
    with pytest.raises(TooLarge):
        yamlsafe.read_text(big)


def test_ordinary_anchors_and_merges_still_work() -> None:
    text = (
        "defaults: &defaults {model: m, temperature: 0}\n"
        "a: {<<: *defaults, prompt: one}\n"
        "b: {<<: *defaults, prompt: two}\n"
        "same: [*defaults, *defaults]\n"
    )
    data = yamlsafe.load(text)

    assert data["a"] == {"model": "m", "temperature": 0, "prompt": "one"}
    assert data["same"] == [data["defaults"], data["defaults"]]


def test_nesting_up_to_the_bound_is_read() -> None:
    deep = "[" * 99 + "x" + "]" * 99

    value = yamlsafe.load(deep)
    for _ in range(98):
        value = value[0]
    assert value == ["x"]
