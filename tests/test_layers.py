"""Imports point one way (DESIGN §2): a module imports only from its own layer and the layers
below it, `legoc.runtime` imports only itself and the base (never torch), and no two legoc
modules import each other, directly or round a loop.

Read statically with `ast` from every file under legoc/: module-level and function-level
imports alike (a lazy import inside a function is still a dependency), but not the ones under
`if TYPE_CHECKING:` (annotations only, never executed). `legoc.runtime.data` loads torch for a
`.pt` file through `importlib` only when asked to; tests/runtime/test_torch_free.py checks that
at run time.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import legoc

PACKAGE = Path(legoc.__file__).resolve().parent

# Importable from everywhere, importing nothing of legoc's (except `legoc` for __version__).
BASE = ("legoc", "legoc.errors")
# Lowest first. A module belongs to the layer with its longest matching prefix (a prefix matches
# itself and its submodules; `legoc.passes` names the package's __init__ only).
LAYERS = (
    ("ir", ("legoc.ir",)),
    ("task", ("legoc.task",)),
    ("frontend", ("legoc.frontend",)),
    # legoc.passes (its __init__) imports nothing, so importing a rewrite pass costs nothing more
    ("passes.rewrite", ("legoc.passes", "legoc.passes.base", "legoc.passes.rewrite")),
    ("scoring", ("legoc.scoring",)),
    ("passes.search/train", ("legoc.passes.search", "legoc.passes.train")),
    ("passes.registry", ("legoc.passes.registry",)),
    ("export", ("legoc.export",)),
    ("api", ("legoc.api",)),
    ("experiment", ("legoc.experiment",)),
    ("cli", ("legoc.cli",)),
    ("testing", ("legoc.testing",)),  # tiny models for tests and benchmarks: nothing imports it
)
# Torch-free: imports only itself and the base; any layer may import it.
RUNTIME = "legoc.runtime"
EXACT_ONLY = {"legoc.passes"}

# Known wrong imports, (importer, imported), each either against the layers or closing a loop:
# ONE list, that only shrinks. An entry that no longer occurs fails the test: delete it.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(tree: ast.AST):
    """Every Import/ImportFrom, at any depth, except under `if TYPE_CHECKING:`."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def imported_names(module: str, path: Path) -> set[str]:
    """Fully qualified names of everything `module` imports (legoc's and others')."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        names.add(base)
        # `from legoc import api` imports the module legoc.api
        names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


@cache
def graph() -> dict[str, set[str]]:
    """module -> the legoc modules importing it runs: the ones it names (`from a import b` of a
    name counts as `a`) and their packages' __init__ outside its own package (Python runs
    `legoc/passes/__init__.py` before `legoc.passes.base` for an importer outside legoc.passes).
    """
    known = modules()
    edges = {}
    for m, p in known.items():
        named = {n for n in imported_names(m, p) if n in known}
        implied = {a for n in named for a in ancestors(n) - ancestors(m) if a in known}
        edges[m] = (named | implied) - {m}
    return edges


def matches(module: str, prefix: str) -> bool:
    return module == prefix or (prefix not in EXACT_ONLY and module.startswith(prefix + "."))


def layer_of(module: str) -> int | None:
    """0 for the base, 1.. for LAYERS in order, None for the runtime or an unplaced module."""
    if module in BASE:
        return 0
    placed = [(len(p), i) for i, (_, ps) in enumerate(LAYERS, 1) for p in ps if matches(module, p)]
    return max(placed)[1] if placed else None


def layer_name(rank: int) -> str:
    return "base" if rank == 0 else LAYERS[rank - 1][0]


def is_runtime(module: str) -> bool:
    return module == RUNTIME or module.startswith(RUNTIME + ".")


def violations() -> dict[tuple[str, str], str]:
    """(importer, imported) -> the rule it breaks."""
    found = {}
    for importer, targets in graph().items():
        for imported in targets:
            if is_runtime(importer):
                if not (is_runtime(imported) or imported in BASE):
                    found[importer, imported] = "runtime imports only itself and the base"
            elif is_runtime(imported):
                continue
            elif importer in BASE:
                found[importer, imported] = "the base imports nothing of legoc's"
            elif layer_of(imported) > layer_of(importer):
                found[importer, imported] = (
                    f"{layer_name(layer_of(importer))} < {layer_name(layer_of(imported))}"
                )
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def without_known_exceptions() -> dict[str, set[str]]:
    return {m: {t for t in ts if (m, t) not in KNOWN_EXCEPTIONS} for m, ts in graph().items()}


def test_every_module_has_a_layer():
    unplaced = [m for m in modules() if not is_runtime(m) and layer_of(m) is None]
    assert not unplaced, f"add these to LAYERS (or BASE): {unplaced}"


def test_imports_point_down_the_layers():
    new = {k: v for k, v in violations().items() if k not in KNOWN_EXCEPTIONS}
    assert not new, "\n".join(f"{a} imports {b}: {rule}" for (a, b), rule in sorted(new.items()))


def test_no_import_cycles():
    loops = cycles(without_known_exceptions())
    assert not loops, "\n".join(" <-> ".join(c) for c in loops)


def test_runtime_never_imports_torch():
    torchy = {
        m: sorted(n for n in imported_names(m, p) if n == "torch" or n.startswith("torch."))
        for m, p in modules().items()
        if is_runtime(m)
    }
    assert not {m: t for m, t in torchy.items() if t}


def test_known_exceptions_still_occur():
    """The allow-list only shrinks: an exception fixed is an entry to delete."""
    in_a_loop = {(a, b) for c in cycles(graph()) for a in c for b in graph()[a] if b in c}
    stale = KNOWN_EXCEPTIONS - set(violations()) - in_a_loop
    assert not stale, f"no longer needed, delete from KNOWN_EXCEPTIONS: {sorted(stale)}"


def test_the_checker_sees_what_it_must(tmp_path):
    """Function-level and relative imports count; `if TYPE_CHECKING:` imports do not."""
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import legoc.ir.core\n"
        "if TYPE_CHECKING:\n    import legoc.api\nelse:\n    import legoc.task\n"
        "def f():\n    from ..passes import base\n    from . import journal\n"
        "    class C:\n        import legoc.cli.app\n"
    )
    names = imported_names("legoc.scoring.probe", source)
    assert names == {
        "typing",
        "typing.TYPE_CHECKING",
        "legoc.ir.core",
        "legoc.task",
        "legoc.passes",
        "legoc.passes.base",
        "legoc.scoring",
        "legoc.scoring.journal",
        "legoc.cli.app",
    }
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert (
        layer_of("legoc.passes")
        == layer_of("legoc.passes.rewrite.dce")
        < layer_of("legoc.passes.search.base")
        < layer_of("legoc.passes.registry")
    )
    assert layer_of("legoc.passes.base") == layer_of("legoc.passes.rewrite.dce")
