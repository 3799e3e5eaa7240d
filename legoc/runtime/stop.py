"""A stop asked for by a signal (SIGTERM, Ctrl-C), kept until the command has ended.

Python runs a signal handler between two bytecodes of the main thread, wherever that is: the
exception it raises is lost when it lands in a finalizer (`__del__`, a generator closed by the
garbage collector, a weakref callback) or in library code that catches it, and the run goes on.
So the CLI's handler also records the stop here, and the long loops (training steps, mask
steps, candidate evaluations) call `check()`: a stop whose first exception was lost is raised
again at the next step instead of never.
"""

from __future__ import annotations

_pending: type[BaseException] | None = None


def request(kind: type[BaseException]) -> None:
    """Record a stop; `check()` raises `kind()` until `clear()` (the first request wins)."""
    global _pending
    if _pending is None:
        _pending = kind


def pending() -> type[BaseException] | None:
    """The exception type a recorded stop raises (None: no stop was asked for)."""
    return _pending


def check() -> None:
    """Raise the recorded stop, if any: call it once per step of a long loop."""
    if _pending is not None:
        raise _pending()


def clear() -> None:
    """Forget the stop (the command that got it has ended)."""
    global _pending
    _pending = None
