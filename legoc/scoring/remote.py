"""Scoring candidates on a Ray cluster: `--ray` / `search.backend: ray`.

Each worker is a Ray actor that loads the model once, from the same file and data split as the
driver (`prepare`), and scores batches of candidate masks with the driver's row order and
stand-in, so every value it returns is the one the driver would have computed. The search
driver stays single-threaded and deterministic: it submits independent candidates together
(`Scorer.prefetch`), and reads the answers in its own order, counting them as it goes. An actor
that dies is replaced and its share of the batch resubmitted: the answers, and so the block, do
not change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from legoc.errors import LegocError

log = logging.getLogger(__name__)

INSTALL = "pip install 'legoc[ray]'"
RETRIES = 3  # times a batch's share is resubmitted after its actor died


class BatchBackend(Protocol):
    """Scores batches of candidates elsewhere (the scorer's `prefetch` calls it)."""

    width: int

    def score_many(
        self,
        row_order: torch.Tensor | None,
        base: dict[str, np.ndarray] | None,
        masks: list[dict[str, np.ndarray]],
        keep: float | None,
    ) -> list[tuple[float, bool]]: ...


@dataclass(frozen=True)
class Source:
    """What a worker loads: the same arguments the driver's `prepare` had."""

    model: str
    task: str
    arch: str | None = None
    trust_model: bool = False
    model_output: str | None = None
    device: str = "cpu"
    threads: int = 1
    hf_class: str | None = None


def import_ray():
    try:
        import ray
    except ImportError:
        raise LegocError(f"--ray: Ray is not installed; install it with {INSTALL}") from None
    return ray


def connect(address: str | None, cpus: int):
    """Ray, started here (`address` None or "local", with `cpus` CPUs) or joined at `address`;
    a cluster that cannot be started or reached is one error line."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    try:
        if address in (None, "local"):
            ray.init(num_cpus=max(cpus, 1), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except Exception as exc:  # Ray reports start-up and connection failures in many types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = "start a local Ray cluster" if address in (None, "local") else f"join {address}"
        raise LegocError(f"--ray: could not {where}: {reason[:200]}") from None
    return ray


class Worker:
    """A Ray actor's state: one prepared scorer, answering batches of candidates."""

    def __init__(self, source: Source):
        from legoc.scoring.prepare import prepare

        torch.set_num_threads(source.threads)
        self.prep = prepare(
            source.model,
            source.task,
            source.arch,
            source.trust_model,
            source.model_output,
            device=source.device,
            hf_class=source.hf_class,
        )

    def score(self, row_order, base, masks, keep) -> list[tuple[float, bool]]:
        """The uncounted score of each mask (early stopped at `keep`), as the driver's scorer
        computes it: same rows in the same order, on the stand-in of `base` when given."""
        scorer = self.prep.scorer
        scorer.follow_rows(row_order)
        stand_in = scorer.stand_in(base) if base is not None else None
        answers = []
        for kept in masks:
            value = scorer.score(kept, count=False, keep=keep, base=stand_in)
            answers.append((value, scorer.last_stopped_early))
        return answers

    def pid(self) -> int:
        import os

        return os.getpid()


class RayBackend:
    """`workers` actors on a Ray cluster (started locally, or joined at `address`)."""

    def __init__(self, source: Source, workers: int = 2, address: str | None = None):
        ray = connect(address, workers)
        self.ray, self.source = ray, source
        self.remote_worker = ray.remote(num_cpus=1, max_restarts=0)(Worker)
        self.actors = [self._start() for _ in range(workers)]
        self.width = len(self.actors)
        self.resubmitted = 0

    def _start(self):
        return self.remote_worker.remote(self.source)

    def score_many(self, row_order, base, masks, keep) -> list[tuple[float, bool]]:
        """Split `masks` into one contiguous share per actor; an actor that dies is replaced
        and its share resubmitted (up to RETRIES times)."""
        shares = np.array_split(np.arange(len(masks)), len(self.actors))
        answers: list[tuple[float, bool] | None] = [None] * len(masks)
        pending = {
            i: self.actors[i].score.remote(row_order, base, [masks[j] for j in share], keep)
            for i, share in enumerate(shares)
            if len(share)
        }
        tries = 0
        while pending:
            failed = []
            for i, ref in pending.items():
                try:
                    for j, answer in zip(shares[i], self.ray.get(ref)):
                        answers[j] = answer
                except self.ray.exceptions.RayActorError:
                    failed.append(i)
            if failed and tries >= RETRIES:
                raise LegocError(f"--ray: workers kept dying ({RETRIES} resubmissions)")
            tries += 1
            pending = {}
            for i in failed:
                log.warning("ray worker %d died; restarting it and resubmitting its share", i)
                self.actors[i] = self._start()
                self.resubmitted += 1
                share = [masks[j] for j in shares[i]]
                pending[i] = self.actors[i].score.remote(row_order, base, share, keep)
        return answers  # type: ignore[return-value]

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
