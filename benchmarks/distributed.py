"""Candidate evaluations per second on Ray actors, against the local scorer, and where more
workers stop helping (Amdahl).

    pip install -e '.[ray]'
    python benchmarks/distributed.py [--kind cnn] [--rows 2048] [--candidates 24] [--threads 1]

Scores the same random candidate masks (whole split, no early stop) with the local scorer and
with 1 and 2 local Ray workers (checking the answers are identical), then models a batch of n
candidates on n workers as: the driver's serial work per candidate s (building the mask, its
key, sending it and reading the answer), one round trip o, and one candidate's scoring c in
parallel: throughput(n) = n / (o + c + n * s). The driver becomes the bottleneck when n * s
reaches o + c, i.e. at n* = (o + c) / s workers; the projection is printed for 8, 32 and 128.
The search adds its own serial part (bisections, accepts that invalidate the rest of a sweep's
batch), so these are upper bounds for the sweeps.
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from legoc import api
from legoc.scoring.journal import evaluation_key
from legoc.scoring.remote import RayBackend, Source, import_ray
from legoc.testing import write_task


def candidates(prep: api.Prepared, count: int, seed: int = 0) -> list[dict]:
    """Masks removing a random third of the removable groups each."""
    rng = np.random.default_rng(seed)
    groups = prep.ir.removable_groups()
    picks = [rng.choice(groups, size=len(groups) // 3, replace=False) for _ in range(count)]
    return [prep.ir.mask_for(sorted(int(g) for g in pick)) for pick in picks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="cnn")
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ray = import_ray()
    with tempfile.TemporaryDirectory() as tmp:
        task = write_task(Path(tmp) / "task", args.kind, n=args.rows)
        prep = api.prepare(task["model"], task["spec"], task["arch"], device="cpu")
        scorer = prep.scorer
        masks = candidates(prep, args.candidates)
        started = time.perf_counter()
        local = [(scorer.score(m, count=False), scorer.last_stopped_early) for m in masks]
        c = (time.perf_counter() - started) / len(masks)
        started = time.perf_counter()
        for m in masks:  # the driver's own work per candidate: mask, key, serialization
            evaluation_key(prep.ir.mask_for(prep.ir.removed_groups()), None, False)
            evaluation_key(m, None, False)
            pickle.dumps(m)
        serial = (time.perf_counter() - started) / len(masks)
        source = Source(str(task["model"]), str(task["spec"]), task["arch"], threads=args.threads)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        rates, trip = {}, 0.0
        for workers in (1, 2):
            backend = RayBackend(source, workers=workers)
            backend.score_many(scorer.row_order, None, masks[:workers], None)  # loaded, warm
            started = time.perf_counter()
            answers = backend.score_many(scorer.row_order, None, masks, None)
            rates[workers] = len(masks) / (time.perf_counter() - started)
            assert answers == local, "remote answers differ from the local scorer's"
            if workers == 1:  # one round trip to an actor, no work
                started = time.perf_counter()
                for _ in range(8):
                    ray.get(backend.actors[0].pid.remote())
                trip = (time.perf_counter() - started) / 8
            backend.close()
        ray.shutdown()
    print(f"model {args.kind}, {args.rows} rows, {len(masks)} candidates, {args.threads} thread(s)")
    print(f"local scorer: {1 / c:.2f} evaluations/s (c = {c * 1e3:.1f} ms per candidate)")
    for workers, rate in rates.items():
        print(f"ray, {workers} worker(s): {rate:.2f} evaluations/s ({rate * c:.2f}x local)")
    print(f"driver serial s = {serial * 1e3:.2f} ms/candidate, round trip o = {trip * 1e3:.1f} ms")
    print(f"serial fraction of one candidate's work: s / (s + c) = {serial / (serial + c):.2%}")
    for n in (8, 32, 128):
        rate = n / (trip + c + n * serial)
        print(f"projected, {n:>3} workers: {rate:.1f} evaluations/s ({rate * c:.1f}x local)")
    print(f"the driver is the bottleneck from n* = (o + c) / s = {(trip + c) / serial:.0f} workers")


if __name__ == "__main__":
    main()
