"""Property tests of the task-spec parser (DESIGN §3.2): every valid spec parses to the values
written and round-trips; every broken one (an unknown key at any depth, a wrong type, a value
out of range, a missing required key, a non-mapping, garbage bytes) is a LegocError naming the
key path, never any other exception."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from legoc.errors import LegocError
from legoc.task.spec import METRICS, SEARCH_METHODS, TaskSpec, _SpecLoader, load_task, parse_spec

# derandomize: the suite explores the same examples on every run (CI stays reproducible)
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


class SpecDumper(yaml.SafeDumper):
    """Writes what `_SpecLoader` reads back unchanged: a string like `1e5`, which the loader
    reads as a number, gets quoted (the dumper quotes whatever its resolvers would retype)."""

    yaml_implicit_resolvers = copy.deepcopy(_SpecLoader.yaml_implicit_resolvers)


def dump(body) -> str:
    return yaml.dump(body, Dumper=SpecDumper, sort_keys=False, allow_unicode=True)


# -- valid specs --------------------------------------------------------------------------

text = st.text(st.characters(categories=("L", "N", "P", "Zs")), min_size=1, max_size=12)
paths = st.from_regex(r"[a-z0-9_./-]{1,20}", fullmatch=True)
positive_float = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
optional = {  # key -> strategy of its value, each left out at random
    "outputs": st.lists(st.integers(0, 1000), min_size=1, max_size=5, unique=True),
    "metric": st.sampled_from(METRICS),
    "keep": st.floats(min_value=1e-6, max_value=1.0),  # a fraction in (0, 1]
    "ablation": st.sampled_from(("mean", "zero", "mean-per-position")),
    "scope": st.lists(text, max_size=3),
    "search": st.fixed_dictionaries(
        {},
        optional={
            "method": st.sampled_from(SEARCH_METHODS),
            "budget": st.integers(1, 10**9),
            "seed": st.integers(0, 2**63 - 1),
        },
    ),
    "finetune": st.fixed_dictionaries(
        {}, optional={"epochs": st.integers(1, 1000), "lr": positive_float}
    ),
}
valid_specs = st.fixed_dictionaries(
    {
        "legoc": st.just(1),
        "name": text,
        "data": st.fixed_dictionaries(
            {"search": paths}, optional={"eval": st.dictionaries(text, paths, max_size=3)}
        ),
    },
    optional=optional,
)


def assert_contains(parsed, written, path="") -> None:
    """Every value written in the spec is the value parsed."""
    if isinstance(written, dict):
        for key, value in written.items():
            got = parsed[key] if isinstance(parsed, dict) else getattr(parsed, key)
            assert_contains(got, value, f"{path}{key}.")
    else:
        assert parsed == written, path


@SETTINGS
@given(valid_specs)
def test_valid_specs_parse_to_the_values_written_and_round_trip(body):
    spec = parse_spec(dump(body))
    assert_contains(spec, body)
    again = parse_spec(dump(spec.model_dump(exclude_none=True)))
    assert again == spec


# -- broken specs: each mutation says which key path its error must name -------------------

SCHEMA_KEYS = {  # mapping path -> its keys (data.eval maps any split name, so it is left out)
    "": set(TaskSpec.model_fields),
    "data": {"search", "eval"},
    "search": {"method", "budget", "seed"},
    "finetune": {"epochs", "lr"},
}
LEAVES = {  # key path -> values of a wrong type for it
    "legoc": ["1", [1], None],  # 1.0 == 1, and the schema version accepts it
    "name": [3, ["a"], {"a": 1}, None, True],
    "data": ["data/search.pt", 3, ["a"]],
    "data.search": [3, ["a"], {"a": "b"}, None],
    "data.eval": ["x.pt", ["x.pt"], 3],
    "outputs": ["0,1", 3, {"a": 1}],
    "metric": [3, ["accuracy"], "Accuracy", "f1"],
    "keep": ["0.9", [0.9], {"a": 1}, True],
    "ablation": ["median", 0, None],
    "scope": ["fc1.*", 3, {"a": 1}],
    "search": ["greedy", 3, ["a"]],
    "search.method": ["beam", 3, None],
    "search.budget": ["many", 2.5, [1], True, None],
    "search.seed": ["0", 0.5, None],
    "finetune": ["yes", 3, [1]],
    "finetune.epochs": ["5", 2.5, None],
    "finetune.lr": ["fast", [0.1], None],
}
OUT_OF_RANGE = {
    "legoc": [0, 2, -1],
    "name": [""],
    "outputs": [[], [-1], [0, 0], [3, -2]],
    "keep": [0, -0.5, 0.0, float("inf"), float("-inf"), float("nan"), 1.5, 95, 1e6],
    "search.budget": [0, -1, -(10**12)],
    "search.seed": [-1, -(2**31), 2**63, 2**64],
    "finetune.epochs": [0, -3],
    "finetune.lr": [0.0, -1e-3, float("inf"), float("nan")],
}
REQUIRED = ["legoc", "name", "data", "data.search"]


def ensure_path(body: dict, dotted: str) -> dict:
    """The mapping holding `dotted`'s last key, creating parent mappings as needed."""
    node = body
    for key in dotted.split(".")[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    return node


def set_path(body: dict, dotted: str, value) -> dict:
    body = copy.deepcopy(body)
    ensure_path(body, dotted)[dotted.split(".")[-1]] = value
    return body


def spec_error(text: str) -> str:
    with pytest.raises(LegocError) as info:
        parse_spec(text, source="spec.yaml")
    message = str(info.value)
    assert info.value.exit_code == 2 and message.startswith("spec.yaml: "), message
    assert "\n" not in message
    return message.removeprefix("spec.yaml: ")


unknown_keys = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)


@SETTINGS
@given(valid_specs, st.sampled_from(sorted(SCHEMA_KEYS)), unknown_keys, st.integers(0, 3))
def test_an_unknown_key_at_any_depth_is_named(body, parent, key, value):
    if key in SCHEMA_KEYS[parent]:
        key = key + "_x"
        if key in SCHEMA_KEYS[parent]:
            return
    dotted = f"{parent}.{key}" if parent else key
    message = spec_error(dump(set_path(body, dotted, value)))
    assert message.startswith(f"{dotted}: unknown key"), message


@SETTINGS
@given(valid_specs, st.sampled_from(sorted(LEAVES)), st.data())
def test_a_value_of_the_wrong_type_is_named(body, dotted, data):
    value = data.draw(st.sampled_from(LEAVES[dotted]))
    message = spec_error(dump(set_path(body, dotted, value)))
    assert message.startswith(f"{dotted}"), message


@SETTINGS
@given(valid_specs, st.sampled_from(sorted(OUT_OF_RANGE)), st.data())
def test_a_value_out_of_range_is_named(body, dotted, data):
    value = data.draw(st.sampled_from(OUT_OF_RANGE[dotted]))
    message = spec_error(dump(set_path(body, dotted, value)))
    assert message.startswith(f"{dotted}"), message


@SETTINGS
@given(valid_specs, st.sampled_from(REQUIRED))
def test_a_missing_required_key_is_named(body, dotted):
    body = copy.deepcopy(body)
    del ensure_path(body, dotted)[dotted.split(".")[-1]]
    assert spec_error(dump(body)) == f"{dotted}: required key is missing"


@SETTINGS
@given(
    st.one_of(
        st.none(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.lists(st.integers(), max_size=4),
        st.booleans(),
    )
)
def test_a_spec_that_is_not_a_mapping_is_refused(value):
    message = spec_error(dump(value))
    assert "must be a YAML mapping" in message or "not valid YAML" in message, message


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.binary(max_size=300))
def test_garbage_bytes_are_a_legoc_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("garbage") / "spec.yaml"
    path.write_bytes(raw)
    with pytest.raises(LegocError) as info:
        load_task(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[" * 5000, "nested more than"),
        ("- " * 3000 + "x", "nested more than"),
        ("a: &x [1, 2]\nb: *x\n", "aliases (*x)"),
        ("legoc: 1\nname: t\ndata: {search: s.pt}\nscope: &s [a, b]\nz: *s\n", "aliases (*s)"),
    ],
    ids=["deep-flow", "deep-block", "alias", "alias-in-valid-spec"],
)
def test_hostile_yaml_is_refused_before_it_is_built(text, needle):
    assert needle in spec_error(text)


def test_the_dumper_quotes_what_the_loader_would_read_as_a_number():
    assert re.search(r"name: ['\"]1e5['\"]", dump({"name": "1e5"}))
    assert yaml.load(dump({"name": "1e5"}), Loader=_SpecLoader) == {"name": "1e5"}


def test_the_runtime_spec_reader_refuses_deep_nesting_too(tmp_path):
    from legoc.runtime.scores import read_task

    path = tmp_path / "spec.yaml"
    path.write_text("- " * 3000 + "x")
    with pytest.raises(LegocError, match="not valid YAML"):
        read_task(path)
