"""The spec's `compare` section and `search.validate`: accepted values, and errors that name
the key path; the --keep/--scope-sets strings go through the same checks."""

from __future__ import annotations

import pytest

from legoc.errors import LegocError
from legoc.task.compare_spec import parse_keep_levels, parse_scope_sets
from legoc.task.spec import parse_spec

BASE = "legoc: 1\nname: t\ndata: {search: s.pt}\n"


def spec_error(extra: str) -> str:
    with pytest.raises(LegocError) as info:
        parse_spec(BASE + extra)
    return str(info.value)


def test_the_sweep_settings_are_read():
    spec = parse_spec(
        BASE
        + "search: {validate: 0.2}\n"
        + "compare: {keep: [0.8, 0.99], scope_sets: {early: ['layer.0*', 'layer.1*']}}\n"
    )
    assert spec.search.validate_fraction == 0.2
    assert spec.compare.keep == [0.8, 0.99]
    assert spec.compare.scope_sets == {"early": ["layer.0*", "layer.1*"]}
    assert parse_spec(BASE).compare is None and parse_spec(BASE).search.validate_fraction is None


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("search: {validate: 0}", "search.validate: must be > 0"),
        ("search: {validate: 1}", "search.validate: must be < 1"),
        ("search: {validate_fraction: 0.2}", "search.validate_fraction: unknown key"),
        ("compare: {keep: []}", "compare.keep: must list at least one keep level"),
        ("compare: {keep: [0.9, 1.2]}", "compare.keep: every level must be a fraction in (0, 1]"),
        ("compare: {keep: [0.9, 0.9]}", "compare.keep: levels must be distinct"),
        ("compare: {keep: 0.9}", "compare.keep: "),
        ("compare: {scope_sets: {}}", "compare.scope_sets: must name at least one set"),
        ("compare: {scope_sets: {'a b': [x]}}", "compare.scope_sets: set name 'a b'"),
        ("compare: {scope_sets: {a: []}}", "compare.scope_sets: set 'a': give at least one"),
        ("compare: {levels: [0.9]}", "compare.levels: unknown key"),
    ],
)
def test_errors_name_the_key_path(extra, expected):
    assert expected in spec_error(extra)


def test_the_command_line_strings():
    assert parse_keep_levels("0.8, 0.9,0.95") == [0.8, 0.9, 0.95]
    sets = parse_scope_sets("early=layer.0*, layer.1*; late=layer.5*")
    assert sets == {"early": ["layer.0*", "layer.1*"], "late": ["layer.5*"]}
    with pytest.raises(LegocError, match="--keep '': must list at least one"):
        parse_keep_levels("")
    with pytest.raises(LegocError, match="set 'a': give at least one non-empty"):
        parse_scope_sets("a=x,,y")
