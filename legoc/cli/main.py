"""The `legoc` console script: block commands start without torch, compiler commands load it.

`legoc run | compose | deploy | catalog | card` are served by an app holding only the block
commands (`legoc.cli.runtime`, over `legoc.runtime`), so they never import torch and start fast,
and they work in a runtime-only install (`pip install legoc`). Every other command goes to the
whole app (`legoc.cli.app`), which needs the compiler's dependencies
(`pip install 'legoc[compiler]'`); without them it says so in one line and exits with 2.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import typer

RUNTIME_COMMANDS = ("run", "compose", "deploy", "catalog", "card")
COMPILER_EXTRA = "pip install 'legoc[compiler]'"


def runtime_app() -> typer.Typer:
    """The block commands alone (what a runtime-only install offers)."""
    from legoc.cli.runtime import register_runtime_commands

    app = typer.Typer(
        add_completion=False,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        help="legoc: run, compose, deploy, catalogue and describe ONNX blocks. The compiler "
        "commands (extract, inspect, baseline, compare) need torch: "
        + COMPILER_EXTRA.replace("[", "\\[")  # rich markup would eat [compiler]
        + ".",
    )
    register_runtime_commands(app)
    return app


def has_compiler() -> bool:
    """torch and pydantic are importable (found, not imported: that is what costs)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("torch", "pydantic"))
    except (ImportError, ValueError):  # a module entry without a spec
        return False


STOPPED = (130, 143)  # Ctrl-C, SIGTERM (DESIGN §3.4)


def main(argv: list[str] | None = None) -> None:
    """The `legoc` command. A run stopped by Ctrl-C or SIGTERM has removed its partial files
    and printed its line by the time the command returns: the process then ends at once
    (`os._exit`), so nothing left in the interpreter's shutdown (threads, exit hooks, the
    teardown of a large model) keeps a stopped run alive."""
    try:
        _run(argv)
    except SystemExit as exc:
        if exc.code in STOPPED:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.code)
        raise


def _run(argv: list[str] | None) -> None:
    args = sys.argv[1:] if argv is None else argv
    command = next((a for a in args if not a.startswith("-")), None)
    if command in RUNTIME_COMMANDS or (command is None and not has_compiler()):
        runtime_app()(args=args, prog_name="legoc")
        return
    if not has_compiler():
        typer.echo(
            f"error: legoc {command} needs the compiler (torch), which this install does not "
            f"have: {COMPILER_EXTRA}; the block commands ({', '.join(RUNTIME_COMMANDS)}) "
            "work without it",
            err=True,
        )
        raise SystemExit(2)
    from legoc.cli.app import app

    app(args=args, prog_name="legoc")


if __name__ == "__main__":
    main()
