"""Pieces every legoc command shares: error reporting, exit codes and progress reports."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from legoc.errors import LegocError, Terminated
from legoc.runtime import stop

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
    except Exception as exc:  # a bug, not bad input: one line unless --debug
        if debug:
            raise
        err.print(
            f"internal error: {exc.__class__.__name__}: {exc} (rerun with --debug and report it)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


Reporter = Callable[[str, int, int], None]  # legoc.api.Progress: (phase, done, total)

STATUS_INTERVAL = 10.0  # seconds, at least, between plain status lines of a running phase
UNITS = {  # what a phase counts (compare prefixes phases with the run: "B seed 0: search")
    "mask training": "steps",
    "search": "evaluations",
    "minimize": "evaluations",
    "round-widths": "evaluations",
    "runs": "runs",
}


@contextmanager
def progress_reporter(quiet: bool = False) -> Iterator[Reporter | None]:
    """The progress callback of a command: bars on a terminal, plain status lines on stderr
    elsewhere (CI, a log file), nothing with --quiet. A run that succeeds ends with a final
    line (plain) or clears its bars (terminal)."""
    if quiet:
        yield None
    elif err.is_terminal:
        with progress_bar() as bar:
            yield stage_progress(bar)
    else:
        lines = StatusLines()
        yield lines
        lines.finish()


class StatusLines:
    """A `(phase, done, total)` callback printing plain lines to stderr: one when a phase ends
    (done == total) and, while one runs, at most one every STATUS_INTERVAL seconds, e.g.
    `legoc: search 120/2000 evaluations, 14 s`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.started = self.last = clock()
        self.totals: dict[str, int] = {}  # each phase's first total (the search's: the budget)
        self.ended: set[str] = set()  # phases whose end was printed (until they run again)

    def __call__(self, phase: str, done: int, total: int) -> None:
        if done >= total and phase in self.ended:
            return  # its end again (a search that used its whole budget, then ends)
        self.ended.discard(phase)
        first = self.totals.setdefault(phase, total)
        unit = UNITS.get(phase.rsplit(": ", 1)[-1], "")
        if done >= total:  # ended (a phase that ends early lowers its total to what it used)
            del self.totals[phase]  # a phase entered again starts afresh
            self.ended.add(phase)
            counts = f", {done}/{first} {unit}".rstrip() if unit or first != 1 else ""
            self.line(f"{phase} done{counts}")
        elif self.clock() - self.last >= STATUS_INTERVAL:
            self.line(f"{phase} {done}/{total} {unit}".rstrip())

    def line(self, text: str) -> None:
        self.last = self.clock()
        err.print(
            f"legoc: {text}, {self.last - self.started:.0f} s",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    def finish(self) -> None:
        self.line("done")


@contextmanager
def on_sigterm():
    """Turn SIGTERM (sent by `timeout`, systemd, Kubernetes, CI) into `Terminated`, a
    KeyboardInterrupt, and Ctrl-C into KeyboardInterrupt, for the duration of the block.

    Each stop is also recorded (`legoc.runtime.stop`): the loops of a long run raise it again
    at their next step when the first exception was lost (raised inside a finalizer or caught
    by library code); before, that run went on with SIGTERM ignored. A further signal while
    the run stops is ignored, so the cleanup finishes. A Ctrl-C ignored by the parent (a job
    started with `&`) stays ignored. Outside the main thread signals cannot be handled:
    nothing changes there."""

    def stopped(signum, frame):
        if stop.pending() is not None:
            return  # already stopping: let the cleanup finish
        kind = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        stop.request(kind)
        raise kind()

    try:
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, stopped)}
    except ValueError:  # not the main thread
        yield
        return
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, stopped)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        stop.clear()


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
