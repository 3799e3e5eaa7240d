"""Safety: loading a block never reads external-data files outside its own folder."""

from __future__ import annotations

import os

import numpy as np
import pytest

from legoc.errors import LegocError
from legoc.runtime import Block
from tests.runtime.helpers import external_block, linear_model, rows


def test_external_data_inside_the_folder_loads_and_runs(tmp_path):
    path = external_block(tmp_path / "ok")
    assert (tmp_path / "ok" / "weights.bin").is_file()
    x = rows((3, 6))
    expected = Block(linear_model(6, 4))(x=x)["logits"]
    assert np.array_equal(Block.load(path)(x=x)["logits"], expected)


def test_a_location_escaping_the_folder_is_refused(tmp_path):
    path = external_block(tmp_path / "inner", "../weights.bin")
    os.replace(tmp_path / "inner" / "weights.bin", tmp_path / "weights.bin")  # it exists
    with pytest.raises(LegocError, match="outside the block's folder"):
        Block.load(path)


def test_an_absolute_location_is_refused(tmp_path):
    path = external_block(tmp_path / "abs", str(tmp_path / "abs" / "weights.bin"))
    with pytest.raises(LegocError, match="absolute path"):
        Block.load(path)


def test_a_symlink_pointing_outside_is_refused(tmp_path):
    path = external_block(tmp_path / "link", "link.bin")
    os.replace(tmp_path / "link" / "weights.bin", tmp_path / "secret.bin")
    (tmp_path / "link" / "link.bin").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(LegocError, match="outside the block's folder"):
        Block.load(path)


def test_a_missing_data_file_is_a_clear_error(tmp_path):
    path = external_block(tmp_path / "gone")
    (tmp_path / "gone" / "weights.bin").unlink()
    with pytest.raises(LegocError, match="does not exist"):
        Block.load(path)
