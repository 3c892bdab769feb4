"""What is provably cheap stays in-process; reading a template's names never runs it."""

from __future__ import annotations

import tracemalloc

import pytest

from bot.templating import parse, shape, undeclared

CHEAP = [
    "{{ draft }}",
    "{{ fetch.body.items }}",
    "Summarise: {{ text }}",
    "{{ inputs['topic']|default('owls')|upper }}",
    "{{ a.b[0].c if a else 'none' }}",
    "{% if score > 3 and not muted %}loud{% else %}{{ x|trim|length }}{% endif %}",
    "{{ items|join(', ') }}",
    "{{ data|tojson }}",
    "{{ first ~ ' ' ~ last }}",
    "{{ n + 1 }}",
    "{{ x is defined and x is string }}",
]
DEAR = [
    "{% for i in items %}{{ i }}{% endfor %}",
    "{{ range(10) }}",
    "{{ now.strftime('%A') }}",
    "{{ n * 2 }}",
    "{{ 2 ** 8 }}",
    "{{ n / 2 }}",
    "{{ items|sum }}",
    "{{ text|replace('a', 'aa') }}",
    "{{ text|center(80) }}",
    "{{ items|join(', ')|tojson }}",  # two growing filters: their factors multiply
    "{{ items|join(separator) }}",
    "{{ data|tojson(4) }}",
    "{% set x = 1 %}{{ x }}",
    "{{ data|map('upper')|list }}",
]


@pytest.mark.parametrize("template", CHEAP)
def test_ordinary_templates_are_cheap(template: str) -> None:
    assert shape("text", template).cheap


@pytest.mark.parametrize("template", DEAR)
def test_loops_calls_arithmetic_and_other_filters_are_not(template: str) -> None:
    assert not shape("text", template).cheap


def test_an_expression_is_shaped_like_a_template() -> None:
    assert shape("expression", "score > 3 and name == 'x'") == shape(
        "text", "{{ score > 3 and name == 'x' }}"
    )
    assert shape("expression", "items|sum").names == frozenset({"items"})


def test_names_are_read_without_building_constants() -> None:
    """Jinja's own finder folds constants: this would build 400 MB right here."""
    tracemalloc.start()
    try:
        tree = parse("text", "{{ 'a'|center(400000000) }}{% for i in x %}{{ i ~ y }}{% endfor %}")
        names = undeclared(tree)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert names == {"x", "y"}
    assert peak < 10_000_000
