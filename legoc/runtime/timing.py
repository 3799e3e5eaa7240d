"""onnxruntime latency: a fixed number of warm-up runs, then the median of timed runs."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from legoc.runtime.block import TensorInfo
from legoc.runtime.data import sample_inputs

WARMUP = 5
RUNS = 30
BATCHES = (1, 64)


def latency_ms(
    session: ort.InferenceSession,
    feeds: Mapping[str, np.ndarray],
    warmup: int = WARMUP,
    runs: int = RUNS,
) -> float:
    """Median wall time of one `session.run` in milliseconds."""
    for _ in range(warmup):
        session.run(None, dict(feeds))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, dict(feeds))
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def batch_of(
    inputs: list[TensorInfo], rows: int, data: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """`rows` rows of real data when given (tiled if short), else seeded random inputs."""
    if not data:
        return sample_inputs(inputs, rows, seed=0)
    feeds = {}
    for info in inputs:
        array = np.asarray(data[info.name])
        reps = -(-rows // array.shape[0])
        tiled = np.concatenate([array] * reps) if reps > 1 else array
        feeds[info.name] = info.conform(tiled[:rows], "latency data")
    return feeds
