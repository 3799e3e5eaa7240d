"""The reference users get: `legoc schema`, `--version`, help that reads at 80 columns, and a
README synopsis and docs/cli.md that list every option of every command."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

import legoc
from legoc.cli.app import app
from legoc.errors import LegocError
from legoc.task.spec import SEARCH_METHODS, parse_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SPECS = sorted(ROOT.glob("examples/*/task.yaml"))
runner = CliRunner()


def commands(command=None, path=()) -> dict[tuple[str, ...], object]:
    """Every leaf command of the typer app by its words, e.g. ("catalog", "add")."""
    command = command or typer.main.get_command(app)
    found = {}
    for name, sub in getattr(command, "commands", {}).items():
        if hasattr(sub, "commands"):
            found.update(commands(sub, (*path, name)))
        else:
            found[(*path, name)] = sub
    return found


def options(command) -> set[str]:
    """A command's option spellings (both forms of a --x/--no-x flag), without --help."""
    names = set()
    for param in command.params:
        if param.param_type_name == "option":
            names.update(o for o in [*param.opts, *param.secondary_opts] if o.startswith("--"))
    return names - {"--help"}


# -- legoc schema ---------------------------------------------------------------------------


def validate(value, schema: dict, defs: dict) -> list[str]:
    """A small JSON Schema checker for the keywords pydantic emits (type, const, enum,
    properties, required, additionalProperties, items, anyOf, $ref, exclusiveMinimum,
    minimum, maximum, minLength); returns the problems found."""
    if "$ref" in schema:
        return validate(value, defs[schema["$ref"].split("/")[-1]], defs)
    if "anyOf" in schema:
        options = [validate(value, option, defs) for option in schema["anyOf"]]
        return [] if any(not o for o in options) else [f"{value!r} matches no anyOf option"]
    types = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "null": type(None),
    }
    kind = schema.get("type")
    if kind and (not isinstance(value, types[kind]) or isinstance(value, bool)):
        return [f"{value!r} is not of type {kind}"]
    problems = []
    if "const" in schema and value != schema["const"]:
        problems.append(f"{value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{value!r} not in {schema['enum']}")
    if "exclusiveMinimum" in schema and not value > schema["exclusiveMinimum"]:
        problems.append(f"{value!r} <= {schema['exclusiveMinimum']}")
    if "maximum" in schema and not value <= schema["maximum"]:
        problems.append(f"{value!r} > {schema['maximum']}")
    if "minimum" in schema and not value >= schema["minimum"]:
        problems.append(f"{value!r} < {schema['minimum']}")
    if "minLength" in schema and len(value) < schema["minLength"]:
        problems.append(f"{value!r} is too short")
    if kind == "object":
        known = schema.get("properties", {})
        problems += [f"missing {k}" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            if key in known:
                problems += validate(item, known[key], defs)
            elif schema.get("additionalProperties") is False:
                problems.append(f"unknown key {key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += validate(item, schema["additionalProperties"], defs)
    if kind == "array":
        for item in value:
            problems += validate(item, schema.get("items", {}), defs)
    return problems


@pytest.fixture(scope="module")
def schema() -> dict:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_schema_is_a_draft_2020_12_schema_that_forbids_unknown_keys(schema):
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object" and set(schema["required"]) == {"legoc", "name", "data"}
    objects = [schema, *schema["$defs"].values()]
    assert all(o["additionalProperties"] is False for o in objects)
    for obj in objects:  # every key documented
        assert all(p.get("description") for p in obj["properties"].values()), obj["title"]


@pytest.mark.parametrize("spec", EXAMPLE_SPECS, ids=lambda p: p.parent.name)
def test_schema_accepts_the_example_specs(schema, spec):
    assert validate(yaml.safe_load(spec.read_text()), schema, schema["$defs"]) == []


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"serach": {"budget": 10}}, "unknown key serach"),
        ({"search": {"budgt": 10}}, "unknown key budgt"),
        ({"metric": "acc"}, "'acc' not in"),
        ({"keep": 0}, "0 <= 0"),
        ({"keep": 95}, "95 > 1"),
        ({"search": {"seed": -1}}, "-1 < 0"),
        ({"search": {"budget": "10"}}, "'10' is not of type integer"),
    ],
)
def test_schema_rejects_what_the_parser_rejects(schema, change, problem):
    spec = {**yaml.safe_load(EXAMPLE_SPECS[0].read_text()), **change}
    problems = validate(spec, schema, schema["$defs"])
    assert any(problem in p for p in problems), problems
    with pytest.raises(LegocError):
        parse_spec(yaml.safe_dump(spec))


def test_schema_agrees_with_jsonschema_where_it_is_installed(schema):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for spec in EXAMPLE_SPECS:
        assert not list(validator.iter_errors(yaml.safe_load(spec.read_text())))
    assert list(validator.iter_errors({**yaml.safe_load(EXAMPLE_SPECS[0].read_text()), "x": 1}))


def test_spec_errors_point_to_the_shipped_reference():
    with pytest.raises(LegocError) as info:
        parse_spec("legoc: 1\nname: t\ndata: {search: s.pt}\nserach: {}\n")
    assert "serach: unknown key" in str(info.value)
    assert "docs/task-spec.md" in str(info.value) and "legoc schema" in str(info.value)
    assert "DESIGN" not in str(info.value)
    assert (ROOT / "docs" / "task-spec.md").is_file()
    assert [where for where in design_citations()] == []


def design_citations() -> list[str]:
    """String literals (docstrings aside) in legoc that cite DESIGN: a message users would
    read, pointing at a file they do not have."""
    found = []
    for path in (ROOT / "legoc").rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and "DESIGN" in node.value
                and id(node) not in docstrings
            ):
                found.append(f"{path.name}:{node.lineno}")
    return found


# -- --version and --help --------------------------------------------------------------------


def test_version_prints_legoc_and_its_runtimes():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    line = result.stdout.strip()
    assert line.startswith(f"legoc {legoc.__version__} ")
    for name, version in (
        ("torch", torch.__version__),
        ("onnx", onnx.__version__),
        ("onnxruntime", onnxruntime.__version__),
    ):
        assert f"{name} {version}" in line


@pytest.mark.parametrize(
    "words", [(), ("compose",), ("catalog",), *commands()], ids=lambda w: " ".join(w) or "legoc"
)
def test_help_at_80_columns_cuts_no_sentence(words):
    result = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "…" not in text
    _usage, _, rest = text.partition("\n")
    assert not re.search(r"\w\.\.\.$", rest, re.MULTILINE), rest  # a cut-off command summary
    assert max(len(line) for line in text.splitlines()) <= 80


def test_help_keeps_whole_sentences_of_resume_and_arch():
    text = runner.invoke(app, ["extract", "--help"], env={"COLUMNS": "80"}).stdout
    flat = " ".join(text.split())
    assert "Continue an interrupted run from its checkpoint (OUTPUT.legoc-ckpt): same block." in (
        flat
    )
    assert "package.module:factory (or file.py:factory) returning the nn.Module" in flat


@pytest.mark.parametrize("command", ["extract", "compare"])
def test_method_help_lists_every_search_method(command):
    flat = " ".join(runner.invoke(app, [command, "--help"]).stdout.split())
    help_text = flat[flat.index("--method") :]
    assert all(method in help_text[:120] for method in SEARCH_METHODS)


# -- README synopsis and docs/cli.md ---------------------------------------------------------


def readme_synopsis() -> dict[tuple[str, ...], set[str]]:
    """The options each `legoc ...` line (and its indented continuation lines) of the README's
    code blocks under "## Commands" names."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Commands") :]
    section = section[: section.index("\n## ", 1)]
    found: dict[tuple[str, ...], set[str]] = {}
    current = None
    for block in re.findall(r"```\n(.*?)```", section, re.DOTALL):
        current = None  # a command's continuation lines end with its code block
        for line in block.splitlines():
            line = line.split("#")[0]
            if line.startswith("legoc "):
                words = line.split()[1:]
                name = tuple(w for w in words[:2] if re.fullmatch(r"[a-z]+", w))
                name = name[:2] if name[:1] in (("compose",), ("catalog",)) else name[:1]
                current = found.setdefault(name, set())
            if current is not None:
                current.update(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-z])\b", line))
    return found


def test_readme_synopsis_lists_every_option_of_every_command():
    synopsis = readme_synopsis()
    for words, command in commands().items():
        assert words in synopsis, f"README synopsis has no `legoc {' '.join(words)}` line"
        named = synopsis[words]
        spellings = [
            {*p.opts, *p.secondary_opts} for p in command.params if p.param_type_name == "option"
        ]
        missing = [s for s in spellings if not s & named and "--help" not in s]
        assert not missing, f"README synopsis of `legoc {' '.join(words)}` lacks {missing}"
        unknown = named - set().union(*spellings)
        assert not unknown, f"README synopsis of `legoc {' '.join(words)}` names {unknown}"


def test_cli_reference_documents_every_command_and_option():
    text = (ROOT / "docs" / "cli.md").read_text()
    sections = re.split(r"\n### ", text)
    for words, command in commands().items():
        name = f"`legoc {' '.join(words)}"
        if words[0] == "catalog":  # one section with a row per subcommand
            section = next(s for s in sections if s.startswith("`legoc catalog"))
            row = next(r for r in section.splitlines() if r.startswith(f"| `catalog {words[1]}"))
            assert options(command) - {"--debug"} <= set(re.findall(r"--[a-z][a-z-]*", row)), words
            continue
        section = next((s for s in sections if s.startswith(name)), None)
        assert section is not None, f"docs/cli.md has no section for {name}`"
        documented = set(re.findall(r"--[a-z][a-z-]*", section))
        assert options(command) - {"--debug"} <= documented, (words, options(command) - documented)
    assert "--version" in text and "| `130` |" in text
