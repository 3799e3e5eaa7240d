"""Search checkpoints: a journal of candidate evaluations that `extract --resume` replays.

The search passes are deterministic under a seed, so a resumed run repeats the same search from
the start and the journal answers its counted evaluations, in order, without running the model.
Evaluations still count, so the budget trajectory and the block are the same as those of an
uninterrupted run (byte for byte); the gradient parts (attribution, mask training) simply run
again. The journal is a text file beside the output, `<output>.legoc-ckpt`: a JSON header that
binds it to one run (model, spec, data files, method, budget, seed, versions), then one line per
evaluation, flushed as it is made (a write of a few dozen bytes, small beside any model pass,
and what makes even a killed run resumable). It is removed once the run ends for good.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

import legoc
from legoc.errors import Interrupted, LegocError, Terminated
from legoc.runtime.files import atomic_file

if TYPE_CHECKING:
    from legoc.scoring.budget import Budget
    from legoc.scoring.scorer import Scorer

log = logging.getLogger(__name__)

SUFFIX = ".legoc-ckpt"
FORMAT = 1


def checkpoint_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + SUFFIX)


def run_header(
    model_sha256: str,
    spec_sha256: str,
    data: dict[str, Path],
    method: str,
    budget: int,
    seed: int,
) -> dict:
    """What a journal is only valid for. Data files are fingerprinted by size and modification
    time (hashing millions of rows would cost a pass over them)."""
    stats = {name: [path.stat().st_size, path.stat().st_mtime_ns] for name, path in data.items()}
    return {
        "legoc": legoc.__version__,
        "torch": torch.__version__,
        "model_sha256": model_sha256,
        "spec_sha256": spec_sha256,
        "data": stats,
        "method": method,
        "budget": budget,
        "seed": seed,
    }


def evaluation_key(kept: dict[str, np.ndarray], keep: float | None, exact: bool) -> str:
    """What a counted evaluation depends on besides the (replayed) search state: the mask, the
    early-stopping floor and the exactness flag."""
    digest = hashlib.sha256()
    for name in sorted(kept):
        digest.update(name.encode())
        digest.update(np.packbits(np.asarray(kept[name], dtype=bool)).tobytes())
    digest.update(repr((keep, exact)).encode())
    return digest.hexdigest()[:20]


@dataclass(frozen=True)
class Entry:
    key: str
    value: float
    stopped_early: bool


class Journal:
    """Answers replayed evaluations in order, records new ones; see the module docstring."""

    def __init__(self, path: Path, header: dict, replay: list[Entry]):
        self.path, self.header = path, header
        self._replay = replay
        self.replayed = 0  # evaluations answered from the journal
        self.recorded = 0  # evaluations paid for (model run) and appended
        self._handle = None
        self._rewrite(replay)

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def start(cls, output: Path, header: dict) -> Journal:
        """A fresh journal (an old checkpoint of the same output is replaced)."""
        path = checkpoint_path(output)
        if path.exists():
            log.warning(
                "starting over: %s from an earlier interrupted run is replaced "
                "(pass --resume to continue it instead)",
                path,
            )
        return cls(path, header, [])

    @classmethod
    def resume(cls, output: Path, header: dict) -> Journal:
        """The journal of an interrupted run of the same model, spec, data and options."""
        path = checkpoint_path(output)
        if not path.is_file():
            raise LegocError(
                f"--resume: no checkpoint {path} to resume (it is written when a run is "
                "interrupted); run without --resume"
            )
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        try:
            saved = json.loads(lines[0])
        except (IndexError, ValueError):
            saved = {}
        if saved.get("legoc_checkpoint") != FORMAT:
            raise LegocError(
                f"--resume: {path} is not a legoc checkpoint; delete it or run without --resume"
            )
        differ = [k for k in sorted(header) if saved.get(k) != header[k]]
        if differ:
            raise LegocError(
                f"--resume: checkpoint {path} belongs to another run ({', '.join(differ)} "
                "differ); rerun with the same model, spec, data and options, or without --resume"
            )
        return cls(path, header, _entries(lines[1:]))

    # -- use ------------------------------------------------------------------------------
    def replaying(self) -> bool:
        """Whether recorded evaluations are still being answered from the checkpoint."""
        return self.replayed < len(self._replay)

    def answer(self, key: str) -> Entry | None:
        """The recorded result of the next evaluation, when the replay still agrees."""
        if self.replayed >= len(self._replay):
            return None
        entry = self._replay[self.replayed]
        if entry.key != key:  # the code or the environment changed: go on live from here
            log.warning(
                "checkpoint %s diverges from this run at evaluation %d; continuing without it",
                self.path,
                self.replayed + 1,
            )
            self._replay = self._replay[: self.replayed]
            self._rewrite(self._replay)
            return None
        self.replayed += 1
        return entry

    def record(self, key: str, value: float, stopped_early: bool) -> None:
        try:
            self._handle.write(json.dumps([key, value, int(stopped_early)]) + "\n")
            self._handle.flush()
        except OSError as exc:  # a full disk, a quota: the run cannot stay resumable
            raise LegocError(
                f"checkpoint {self.path}: cannot write ({exc.strerror or exc}); nothing was "
                "written: free space in the output folder or pick another one"
            ) from None
        self.recorded += 1

    def close(self) -> None:
        """Keep the checkpoint (for --resume)."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            try:
                handle.close()
            except OSError:  # the flush of a line that did not fit: lines end torn, then read
                pass

    def remove(self) -> None:
        """The run ended for good: nothing to resume."""
        self.close()
        self.path.unlink(missing_ok=True)

    # -- file -----------------------------------------------------------------------------
    def _rewrite(self, entries: list[Entry]) -> None:
        """Header plus `entries`, replacing the file at once (drops a torn last line); later
        entries are appended."""
        self.close()
        body = [json.dumps({"legoc_checkpoint": FORMAT, **self.header}, sort_keys=True) + "\n"]
        body += [json.dumps([e.key, e.value, int(e.stopped_early)]) + "\n" for e in entries]
        with atomic_file(self.path) as tmp:  # exclusive and beside it: never a fixed name
            tmp.write_text("".join(body), encoding="utf-8")
        try:
            self._handle = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise LegocError(
                f"checkpoint {self.path}: cannot write ({exc.strerror or exc}); "
                "pick a writable output folder"
            ) from None


@dataclass
class Run:
    """Where a checkpointed run is (`stage`: search, then export) and what it paid for."""

    journal: Journal | None
    budget: Budget  # the run's work (its evaluations are what the journal replays)
    stage: str = "search"

    @property
    def replayed(self) -> int:
        return self.journal.replayed if self.journal else 0

    @property
    def paid(self) -> int:
        return self.journal.recorded if self.journal else 0


@contextmanager
def checkpointed(
    scorer: Scorer,
    output: str | Path | None,
    header: dict | None,
    resume: bool,
    budget: Budget,
) -> Iterator[Run]:
    """Journal the scorer's counted evaluations beside `output` for the run inside the block.

    Ctrl-C becomes `Interrupted`, saying where the run was and keeping the checkpoint (also kept
    on a crash: what was paid for stays resumable); a run that ends for good (success, bad
    input, task not met) removes it. Without an output there is no checkpoint."""
    if output is None and resume:
        raise LegocError("--resume: the checkpoint lives beside the output; pass -o BLOCK")
    journal = None
    if output is not None:
        journal = (Journal.resume if resume else Journal.start)(Path(output), header)
    run = Run(journal, budget)
    scorer.journal = journal
    try:
        yield run
    except KeyboardInterrupt as exc:
        done, used = budget.evaluations, int(budget.used + 1e-9)
        spent = f"after {done} evaluations ({used} of the budget of {budget.limit} used)"
        code = getattr(exc, "exit_code", Interrupted.exit_code)  # 143 when SIGTERM stopped it
        word = "stopped by SIGTERM" if code == Terminated.exit_code else "interrupted"
        if journal is None:
            raise Interrupted(f"{word} {spent}", code) from None
        journal.close()
        where = (
            spent
            if run.stage == "search"
            else f"after the search ({done} evaluations), while building the block"
        )
        raise Interrupted(
            f"{word} {where}; nothing was written; checkpoint saved to {journal.path}; "
            "rerun the same command with --resume to continue",
            code,
        ) from None
    except LegocError:
        if journal is not None:
            journal.remove()  # the run ended for good: a rerun would end the same way
        raise
    except BaseException:
        if journal is not None:
            journal.close()
        raise
    else:
        if journal is not None:
            journal.remove()
    finally:
        scorer.journal = None


def _entries(lines: list[str]) -> list[Entry]:
    """Complete entries; reading stops at the first torn or unreadable line."""
    entries = []
    for line in lines:
        try:
            key, value, stopped = json.loads(line)
            entries.append(Entry(str(key), float(value), bool(stopped)))
        except (ValueError, TypeError):
            break
    return entries
