"""Bounded memory over large data files (legoc.paging, Split): reading a memory-mapped split
batch by batch gives its pages back, so a full pass does not grow the process by the file's
size; the data read is unchanged; in-memory data is never released."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from legoc.task.paging import mapped_from, release_pages
from legoc.task.spec import load_split

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise, /proc")


def resident_file_mb() -> float:
    """This process's resident file-backed memory (RssFile in /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile line")


def write_rows(path: Path, rows: int, width: int = 64) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    data = {"x": torch.randn(rows, width, generator=generator), "y": torch.arange(rows) % 4}
    torch.save(data, path)
    return data


@linux_only
def test_a_full_pass_over_a_mapped_split_stays_small(tmp_path):
    path = tmp_path / "big.pt"
    write_rows(path, 200_000)  # 51 MB of inputs
    split = load_split("search", path, ["x"], "data.search", needs_labels=True)
    assert split.mapped
    before = resident_file_mb()
    total = 0.0
    for inputs, y, _ in split.batches(4096, 4096):
        total += float(inputs["x"].sum()) + float(y.sum())
    assert resident_file_mb() - before < 8, "the pages of the pass stayed resident"
    assert split.all_finite(split.inputs["x"])
    assert split.value_range(split.y) == (0, 3)
    assert resident_file_mb() - before < 8
    assert total != 0.0


@linux_only
def test_batches_and_random_rows_read_the_data_unchanged_after_release(tmp_path):
    path = tmp_path / "data.pt"
    data = write_rows(path, 5000, width=8)
    split = load_split("search", path, ["x"], "data.search", needs_labels=True)
    for _ in range(2):  # the second pass reads pages given back by the first
        got = torch.cat([inputs["x"] for inputs, _, _ in split.batches(700)])
        assert torch.equal(got, data["x"])
    rows = torch.tensor([4999, 0, 17, 2500])
    inputs, y, _ = split.take(rows)
    assert torch.equal(inputs["x"], data["x"][rows]) and torch.equal(y, data["y"][rows])
    assert torch.equal(split.inputs["x"][:3], data["x"][:3])


def test_nan_in_the_last_chunk_is_found(tmp_path):
    path = tmp_path / "data.pt"
    x = torch.randn(70_000, 2)
    x[-1, 1] = float("nan")
    torch.save({"x": x, "y": torch.zeros(70_000, dtype=torch.long)}, path)
    with pytest.raises(Exception, match="'x' contains NaN"):
        load_split("search", path, ["x"], "data.search", needs_labels=True)


@linux_only
def test_uncompressed_npz_is_mapped_and_compressed_npz_read_whole(tmp_path):
    x = np.random.default_rng(0).standard_normal((300, 5)).astype(np.float32)
    y = np.arange(300) % 3
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    np.savez_compressed(tmp_path / "packed.npz", x=x, y=y)
    for name, mapped in [("plain", True), ("packed", False)]:
        split = load_split("s", tmp_path / f"{name}.npz", ["x"], "data.search", True)
        assert split.mapped is mapped, name
        got = torch.cat([inputs["x"] for inputs, _, _ in split.batches(64)])
        assert np.array_equal(got.numpy(), x) and np.array_equal(split.y.numpy(), y)


def test_anonymous_memory_is_never_released(tmp_path):
    """MADV_DONTNEED would zero anonymous memory: it is never taken for a file mapping."""
    path = tmp_path / "data.pt"
    write_rows(path, 10)
    in_memory = torch.ones(100_000)
    assert not mapped_from([in_memory], path)
    release_pages(in_memory[:10])  # rounded inwards: less than a page, nothing released
    assert bool((in_memory == 1).all())
