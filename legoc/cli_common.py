"""Pieces every legoc command shares: error reporting, exit codes and progress bars."""

from __future__ import annotations

import logging
import signal
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from legoc.errors import LegocError, Terminated

err = Console(stderr=True)


@contextmanager
def reporting(debug: bool):
    """Map legoc's errors to one line and their exit code; tracebacks only with --debug.

    SIGTERM is handled like Ctrl-C while the command runs (see `on_sigterm`): the same cleanup,
    no partial file, the checkpoint kept, and exit code 143."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(name)s: %(message)s"
    )
    try:
        with on_sigterm():
            yield
    except LegocError as exc:
        if debug:
            err.print_exception()
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        code = getattr(exc, "exit_code", 130)
        word = "stopped by SIGTERM" if code == Terminated.exit_code else "interrupted"
        message = str(exc) or f"{word}: nothing was written"
        err.print(message, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code) from None
    except OSError as exc:  # the system refused a read or write legoc did not wrap: bad input
        if debug:
            err.print_exception()
        where = f"{exc.filename}: " if exc.filename else ""
        err.print(
            f"error: {where}{exc.strerror or exc} (the system refused to read or write a file)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from None
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


@contextmanager
def on_sigterm():
    """Turn SIGTERM (sent by `timeout`, systemd, Kubernetes, CI) into `Terminated`, a
    KeyboardInterrupt, for the duration of the block; a second SIGTERM during the cleanup is
    ignored. Outside the main thread signals cannot be handled: nothing changes there."""

    def terminated(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminated)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


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
