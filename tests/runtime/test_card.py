"""Cards: provenance, interface, sizes, scores and a kept-units picture, in Markdown or HTML."""

from __future__ import annotations

import shutil

import pytest

from legoc.errors import LegocError
from legoc.runtime import Block, compose_parallel, write_card
from tests.runtime.helpers import save_linear

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def block(tiny, tmp_path):
    path = tmp_path / "mlp.onnx"
    shutil.copy(tiny["mlp"]["block"], path)
    return path


def test_markdown_card_has_provenance_sizes_scores_and_the_units_picture(block):
    files = write_card(block)
    assert files.card == block.with_suffix(".md")
    assert files.image == block.with_name("mlp.units.png")
    assert files.image.read_bytes()[:8] == PNG
    text = files.card.read_text()
    meta = Block.load(block)
    for needle in (
        "# Building block: tiny-mlp",
        meta.metadata["legoc.source_sha256"],
        meta.metadata["legoc.spec_sha256"],
        "| params source → block | 164 → 125 (76.2%) |",
        "| input | x | float32[batch,6] |",
        "| search | 1.0000 | 0.9062 | 0.9062 |",
        "![kept units per layer](mlp.units.png)",
        "| fc1 | 7 | 8 | 88% |",
        "onnxruntime",
    ):
        assert needle in text, needle


def test_html_card_escapes_and_links_the_picture(block, tmp_path):
    files = write_card(
        block, tmp_path / "cards" / "c.html" if False else tmp_path / "c.html", "html"
    )
    text = files.card.read_text()
    assert text.startswith("<!doctype html>") and '<img src="c.units.png"' in text
    assert "<td>params source → block</td>" in text and "<h2>Scores per split</h2>" in text
    assert (tmp_path / "c.units.png").read_bytes()[:8] == PNG


def test_composed_block_card_lists_its_parts_and_their_units(tiny, tmp_path):
    mlp = Block.load(tiny["mlp"]["block"])
    out = tmp_path / "pair.onnx"
    composition = compose_parallel([mlp, mlp], names=["left", "right"])
    composition.save(out)
    text = write_card(out).card.read_text()
    assert "## Parts (parallel)" in text and "| left | tiny-mlp |" in text
    assert "| left/fc1 |" in text and "| right/head |" in text


def test_a_block_without_legoc_metadata_gets_a_card_without_picture(tmp_path):
    files = write_card(save_linear(tmp_path / "plain.onnx", 3, 2))
    assert files.image is None and "unknown (no legoc metadata)" in files.card.read_text()


def test_unknown_format_is_refused(block):
    with pytest.raises(LegocError, match="--format 'pdf'"):
        write_card(block, fmt="pdf")


def test_an_aligned_block_states_its_zero_channels_and_keeps_the_rationale_count(
    shapes_block, tmp_path
):
    block = Block.load(shapes_block)
    layout = block.meta("legoc.layout")
    assert layout["channels_added"] > 0  # conv5 keeps a count that is not a multiple of 16
    params = block.meta("legoc.rationale")["params"]
    assert block.rationale_params() == params["block"] < block.param_count()
    assert block.param_count() == layout["stored_params"]
    text = write_card(shapes_block, tmp_path / "card.md").card.read_text()
    assert f"padded to multiples of 16 with {layout['channels_added']} zero channels" in text
    padded = "initializer elements, padded with alignment zeros"
    assert f"| stored | {block.param_count():,} {padded} |" in text
    assert f"| params source → block | {params['source']:,} → {params['block']:,} " in text
