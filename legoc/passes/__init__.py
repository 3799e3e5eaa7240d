"""Passes over the IR: search passes decide the kept units, rewrite passes restructure the
graph, train passes change weights (option C, opt-in).

Each pass is a frozen dataclass of its options with a kebab-case `name` and a `kind`; its
`run(ir, ctx)` returns a `PassResult` (`legoc.passes.base`). `legoc.passes.registry` maps names
to passes and holds the named pipelines (plain strings, parsed by `parse_pipeline`);
`legoc.passes.rewrite` holds the rewrite passes' own registry, which scoring uses.

This package's __init__ imports nothing: importing `legoc.passes.rewrite.*` from scoring must
not pull in the search passes, which sit above scoring.
"""
