"""Shared fixtures: a fresh tiny task folder per test (the tiny models live in tests.helpers)."""

from __future__ import annotations

import pytest

from tests.helpers import write_task


@pytest.fixture
def mlp_task(tmp_path):
    """A trained tiny MLP state dict with spec.yaml and data/{search,iid}.pt in tmp_path/task."""
    return write_task(tmp_path / "task", "mlp")
