"""Pieces every legoc command shares: error reporting, exit codes and progress bars."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from legoc.errors import Interrupted, LegocError

err = Console(stderr=True)


@contextmanager
def reporting(debug: bool):
    """Map legoc's errors to one line and their exit code; tracebacks only with --debug."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(name)s: %(message)s"
    )
    try:
        yield
    except LegocError as exc:
        if debug:
            err.print_exception()
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        message = str(exc) if isinstance(exc, Interrupted) else "interrupted: nothing was written"
        err.print(message, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - a bug, not bad input: one line unless --debug
        if debug:
            raise
        err.print(
            f"internal error: {exc.__class__.__name__}: {exc} (rerun with --debug and report it)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


def progress_bar() -> Progress:
    """A transient bar on stderr, shown only on a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def stage_progress(bar):
    """A `(stage, done, total)` callback drawing one bar per stage on `bar`."""
    tasks: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return progress
