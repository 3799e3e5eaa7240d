"""The catalogue: add, list, show, search by task or source, verify; a tampered entry fails
verification naming it and saying how to fix it."""

from __future__ import annotations

import json
import shutil

import pytest

from legoc.errors import LegocError
from legoc.runtime import Block, Catalog, compose_parallel


@pytest.fixture
def catalog(tiny, tmp_path) -> Catalog:
    catalog = Catalog(tmp_path / "cat")
    catalog.add(tiny["mlp"]["block"])
    catalog.add(tiny["cnn"]["block"], name="vision")
    return catalog


def test_add_copies_the_block_and_indexes_it(catalog, tiny):
    entries = catalog.entries()
    assert sorted(entries) == ["mlp", "vision"]
    mlp = entries["mlp"]
    block = Block.load(tiny["mlp"]["block"])
    assert mlp.file == "blocks/mlp.onnx" and (catalog.root / mlp.file).is_file()
    assert mlp.task == "tiny-mlp" and mlp.source_sha256 == block.metadata["legoc.source_sha256"]
    assert mlp.params == block.meta("legoc.rationale")["params"]
    assert len(mlp.sha256) == 64 and mlp.added.endswith("+00:00")
    index = json.loads((catalog.root / "index.json").read_text())
    assert index["legoc_catalog"] == 1 and sorted(index["entries"]) == ["mlp", "vision"]


def test_search_by_task_glob_and_source_prefix(catalog, tiny):
    assert [e.name for e in catalog.search(task="tiny-cnn")] == ["vision"]
    assert [e.name for e in catalog.search(task="TINY-*")] == ["mlp", "vision"]
    source = catalog.get("mlp").source_sha256
    assert {e.name for e in catalog.search(source=source[:8])} >= {"mlp"}
    assert catalog.search(task="tiny-mlp", source="0" * 64) == []


def test_search_by_task_matches_substrings_case_insensitively(catalog):
    assert [e.name for e in catalog.search(task="cnn")] == ["vision"]
    assert [e.name for e in catalog.search(task="ML")] == ["mlp"]
    assert [e.name for e in catalog.search(task="tiny")] == ["mlp", "vision"]
    assert [e.name for e in catalog.search(task="*-c?n")] == ["vision"]  # globs still work
    assert catalog.search(task="cnn-") == [] and catalog.search(task="tiny-*x") == []


def test_composed_blocks_are_found_by_their_parts(catalog, tiny, tmp_path):
    mlp = Block.load(tiny["mlp"]["block"])
    mlp2 = Block.load(tiny["mlp2"]["block"])
    composition = compose_parallel([mlp, mlp2], concat=True)
    composition.save(tmp_path / "pair.onnx")
    catalog.add(tmp_path / "pair.onnx")
    assert "pair" in [e.name for e in catalog.search(task="tiny-mlp")]
    assert catalog.get("pair").tasks == ["parallel(tiny-mlp, tiny-mlp)", "tiny-mlp"]


def test_verify_passes_then_a_tampered_entry_fails_naming_it(catalog):
    assert len(catalog.verify()) == 2
    path = catalog.root / "blocks" / "vision.onnx"
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(LegocError) as info:
        catalog.verify()
    message = str(info.value)
    assert "entry 'vision'" in message and "changed after it was added" in message
    assert "--name vision --replace" in message and "'mlp'" not in message
    with pytest.raises(LegocError, match="entry 'vision'"):
        catalog.load("vision")  # loading an entry verifies it first


def test_a_missing_entry_file_fails_verification(catalog):
    (catalog.root / "blocks" / "mlp.onnx").unlink()
    with pytest.raises(LegocError, match="entry 'mlp': blocks/mlp.onnx is missing"):
        catalog.verify()


def test_replacing_an_entry_needs_replace(catalog, tiny):
    with pytest.raises(LegocError, match="'mlp' is already an entry; pass --name NEW or --replace"):
        catalog.add(tiny["mlp2"]["block"], name="mlp")
    entry = catalog.add(tiny["mlp2"]["block"], name="mlp", replace=True)
    assert entry.outputs == ["logits"] and catalog.load("mlp").outputs[0].shape == ("batch", 2)


def test_bad_names_folders_and_indexes_are_refused(tiny, tmp_path):
    with pytest.raises(LegocError, match="catalogue name '../x'"):
        Catalog(tmp_path / "c").add(tiny["mlp"]["block"], name="../x")
    with pytest.raises(LegocError, match="does not exist; create it"):
        Catalog(tmp_path / "no" / "such").add(tiny["mlp"]["block"])
    with pytest.raises(LegocError, match="folder not found"):
        Catalog(tmp_path / "none").entries()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "index.json").write_text("{not json")
    with pytest.raises(LegocError, match="not a legoc catalogue index"):
        Catalog(broken).entries()
    with pytest.raises(LegocError, match="no entry 'ghost'"):
        shutil.rmtree(broken)
        broken.mkdir()
        Catalog(broken).get("ghost")
