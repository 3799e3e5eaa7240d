"""Shared fixtures: a fresh tiny task folder per test (the tiny models live in tests.helpers)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import write_task

# Tiny models: one thread avoids OpenMP spin-waits that make them 100x slower on 2 cores.
torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="Rewrite tests/golden/*.txt from the current output (review the diff!).",
    )


@pytest.fixture(autouse=True)
def _golden_mode(request, monkeypatch):
    if request.config.getoption("--update-golden"):
        monkeypatch.setenv("LEGOC_TEST_UPDATE_GOLDEN", "1")


@pytest.fixture
def mlp_task(tmp_path):
    """A trained tiny MLP state dict with spec.yaml and data/{search,iid}.pt in tmp_path/task."""
    return write_task(tmp_path / "task", "mlp")
