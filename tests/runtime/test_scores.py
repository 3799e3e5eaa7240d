"""The torch-free metrics agree with the compiler's (legoc.task.metrics, in torch) on every metric,
and the runtime's spec reader resolves splits like the compiler's."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
import torch
import yaml

from legoc.errors import LegocError
from legoc.runtime import scores
from legoc.runtime.scores import metric_value, read_task
from legoc.task import spec as task_spec
from legoc.task.metrics import METRICS
from legoc.task.spec import load_task


def test_every_metric_is_known_to_the_compiler_the_runtime_and_the_spec():
    """A metric added in one place only would pass the spec and then fail mid-run."""
    names = set(METRICS)
    assert {m.name for m in METRICS.values()} == names
    assert set(scores.METRICS) == names
    assert set(task_spec.METRICS) == names
    assert set(get_args(task_spec.TaskSpec.model_fields["metric"].annotation)) == names


@pytest.mark.parametrize("name", sorted(METRICS))
@pytest.mark.parametrize("with_alt", [False, True])
def test_numpy_metrics_match_the_compilers(name, with_alt):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((50, 5)).astype(np.float32)
    reference = rng.standard_normal((50, 5)).astype(np.float32)
    y = rng.integers(0, 5, 50) if name != "mse" else rng.standard_normal((50, 5))
    y_alt = (y + 1) % 5 if with_alt and name == "logit_diff" else None
    t = {
        k: None if v is None else torch.from_numpy(np.asarray(v))
        for k, v in dict(logits=logits, y=y, reference=reference, y_alt=y_alt).items()
    }
    total, count = METRICS[name].batch_sum(t["logits"], t["y"], t["reference"], t["y_alt"])
    expected = total / count
    got = metric_value(name, logits, y, reference, y_alt)
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_the_spec_reader_resolves_splits_like_the_compiler(tiny):
    spec = tiny["mlp"]["spec"]
    ours, theirs = read_task(spec), load_task(spec)
    assert ours.splits == theirs.split_paths()
    assert (ours.name, ours.metric, ours.sha256) == (theirs.name, "accuracy", theirs.sha256)


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"name": "t"}, "not a legoc task spec"),
        ({"legoc": 1, "name": "t", "data": {}}, "data.search: required key is missing"),
        ({"legoc": 1, "data": {"search": "s.npz"}, "metric": "f1"}, "metric: must be one of"),
        ({"legoc": 1, "data": {"search": "missing.npz"}}, "data.search: data file"),
    ],
)
def test_bad_specs_name_the_key(tmp_path, body, needle):
    (tmp_path / "s.npz").write_bytes(b"")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(body))
    with pytest.raises(LegocError, match=needle):
        read_task(spec)


@pytest.mark.parametrize("name", sorted(METRICS))
@pytest.mark.parametrize("tokens", [False, True])
def test_per_row_metrics_average_to_the_metric(name, tokens):
    """What compare's paired bootstrap resamples: one value per row whose mean is the metric."""
    from legoc.runtime.scores import metric_rows

    rng = np.random.default_rng(1)
    shape = (40, 3, 5) if tokens else (40, 5)
    logits, reference = rng.standard_normal(shape), rng.standard_normal(shape)
    y = rng.integers(0, 5, shape[:-1]) if name != "mse" else rng.standard_normal(shape)
    rows = metric_rows(name, logits, y, reference)
    assert rows.shape == (40,)
    assert rows.mean() == pytest.approx(metric_value(name, logits, y, reference), abs=1e-12)
