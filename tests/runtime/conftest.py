"""Real blocks extracted once per session: tiny ones (seconds) and the shapes example."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime import helpers


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, dict]:
    return helpers.tiny_blocks(tmp_path_factory.getbasetemp() / "tiny-blocks")


@pytest.fixture(scope="session")
def shapes_block(tmp_path_factory) -> Path:
    return helpers.shapes_block(tmp_path_factory.getbasetemp() / "shapes-block")
