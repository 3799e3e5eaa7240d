"""Reading arrays for blocks: .npz and .npy with numpy, torch files only through torch, and
the task-data convention for picking a block's inputs out of a file."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from legoc.errors import LegocError
from legoc.runtime import read_arrays
from legoc.runtime.data import inputs_for


def test_npz_npy_and_torch_files_read_to_the_same_arrays(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.savez(tmp_path / "a.npz", x=x, y=np.array([0, 1, 2]))
    np.save(tmp_path / "b.npy", x)
    torch.save({"x": torch.from_numpy(x)}, tmp_path / "c.pt")
    torch.save(torch.from_numpy(x), tmp_path / "d.pt")
    assert np.array_equal(read_arrays(tmp_path / "a.npz")["x"], x)
    assert np.array_equal(read_arrays(tmp_path / "b.npy")["b"], x)
    assert np.array_equal(read_arrays(tmp_path / "c.pt")["x"], x)
    assert np.array_equal(read_arrays(tmp_path / "d.pt")["d"], x)


def test_torch_files_without_torch_say_to_use_npz(tmp_path, monkeypatch):
    torch.save({"x": torch.zeros(2)}, tmp_path / "c.pt")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(LegocError, match="needs torch, which is not installed: save the arrays"):
        read_arrays(tmp_path / "c.pt")


def test_unsafe_or_unreadable_files_are_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(LegocError, match="not a readable .npz of numeric arrays"):
        read_arrays(tmp_path / "obj.npz")
    (tmp_path / "junk.pt").write_bytes(b"junk" * 10)
    with pytest.raises(LegocError, match="neither an .npz nor a tensor file"):
        read_arrays(tmp_path / "junk.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(LegocError, match="must hold a tensor or a dict of named tensors"):
        read_arrays(tmp_path / "list.pt")
    with pytest.raises(LegocError, match="not found"):
        read_arrays(tmp_path / "none.npz")


def test_inputs_are_picked_by_name_then_x_then_the_only_array():
    a = np.zeros(1)
    assert inputs_for(["img"], {"img": a, "x": a + 1}, "l", "f")["img"] is a
    assert inputs_for(["img"], {"x": a, "y": a}, "l", "f")["img"] is a
    assert inputs_for(["img"], {"pixels": a, "y": a}, "l", "f")["img"] is a
    with pytest.raises(LegocError, match="f has no array 'b' .* it has \\['a', 'y'\\]"):
        inputs_for(["a", "b"], {"a": a, "y": a}, "l", "f")
