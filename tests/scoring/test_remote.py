"""Scoring on Ray actors (`--ray`): the same block as a local run, byte for byte, and a killed
actor is survived. Skipped where Ray is not installed (`pip install 'legoc[ray]'`)."""

from __future__ import annotations

import pytest

from legoc import api
from legoc.scoring.remote import RayBackend, Source
from legoc.testing import write_task

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'legoc[ray]'")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_task(tmp_path_factory.mktemp("remote") / "task", "mlp")


def _extract(task, out, **options):
    return api.extract(
        task["model"], task["spec"], out, arch=task["arch"], method="greedy", budget=60, **options
    )


def test_a_ray_run_writes_the_local_block(cluster, task, tmp_path):
    local = _extract(task, tmp_path / "local.onnx")
    remote = _extract(task, tmp_path / "ray.onnx", ray="local", workers=2)
    assert (tmp_path / "ray.onnx").read_bytes() == (tmp_path / "local.onnx").read_bytes()
    assert remote.evaluations == local.evaluations
    assert remote.remote_answers > 0  # the sweeps' candidates were scored on the actors


def test_a_killed_actor_is_replaced_and_its_share_resubmitted(cluster, task):
    prep = api.prepare(task["model"], task["spec"], task["arch"])
    ir, scorer = prep.ir, prep.scorer
    groups = ir.removable_groups()
    masks = [ir.mask_for(groups[i : i + 3]) for i in range(0, 12, 3)]
    local = [(scorer.score(m, count=False, keep=0.9), scorer.last_stopped_early) for m in masks]
    backend = RayBackend(Source(str(task["model"]), str(task["spec"]), task["arch"]), workers=2)
    try:
        ray.kill(backend.actors[1])
        answers = backend.score_many(scorer.row_order, None, masks, 0.9)
    finally:
        backend.close()
    assert answers == local
    assert backend.resubmitted == 1


def test_a_guarded_search_is_scored_here_and_says_so(cluster, tmp_path):
    # the workers would score the whole search split, not the guard's search part
    task = write_task(tmp_path / "task", "mlp", spec={"search": {"validate": 0.25}})
    local = _extract(task, tmp_path / "local.onnx")
    remote = _extract(task, tmp_path / "ray.onnx", ray="local", workers=2)
    assert (tmp_path / "ray.onnx").read_bytes() == (tmp_path / "local.onnx").read_bytes()
    assert remote.evaluations == local.evaluations
    assert remote.remote_answers == 0
    assert any("Ray not used" in w for w in remote.warnings)
