"""DeBERTa's share_att_key: q and k project the relative positions too, one Linear applied
twice. Each use is a space of its own (`legoc.ir.weight_uses`), coupled row by row, so a head's
q, k and v rows and its rows of the two second uses are one unit, and slicing the shared
weight once serves both uses."""

from __future__ import annotations

import torch

from legoc.export.writer import PARITY_TOLERANCE, export_block
from legoc.ir.frozen import frozen_units
from legoc.ir.masking import masked_model
from legoc.task.spec import Split
from tests.frontend.test_unfold_batch_heads import DIM, HEADS, TOKENS, captured, without_two_heads
from tests.helpers import assert_float_close


def heads_of(ir):
    return [g for g in ir.groups if any(m[0] == "q" for m in g.members)]


def test_a_weight_shared_with_the_positional_projection_slices_with_its_heads(tmp_path):
    model, ir = captured(share_att_key=True)
    fresh = torch.randn(6, TOKENS, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_float_close(ir.gm(fresh), model(fresh))
    heads = heads_of(ir)
    assert len(heads) == HEADS and all(g.frozen is None for g in heads)
    spaces = ["k", "k__use_1", "q", "q__use_1", "v"]
    assert all(sorted({m[0] for m in g.members}) == spaces for g in heads)
    assert all(len(g.members) == 5 * DIM for g in heads)
    masked, block = without_two_heads(ir, heads)
    assert len(masked.kept_units()["k"]) == 2 * DIM
    with torch.no_grad():
        assert_float_close(block.gm(fresh), masked_model(masked)(fresh))
    split = Split("search", {"x": fresh}, None)
    diff = export_block(block, masked_model(masked), split, tmp_path / "block.onnx", {})
    assert diff <= PARITY_TOLERANCE


def test_a_second_use_that_reads_a_stream_of_units_freezes_the_heads_naming_the_weight():
    """With `reads_positions` the second uses read the embedding stream (units) at some
    columns only: row i of the weight cannot be cut for one use, so the heads freeze."""
    _model, ir = captured(share_att_key=True, reads_positions=True)
    heads = heads_of(ir)
    assert len(heads) == HEADS
    assert {g.frozen for g in heads} == {"weight q.weight applied 2 times with a non-unit tensor"}
    lines = [r.line() for r in frozen_units(ir)]
    assert any(line.startswith("k: 16/16 units frozen") for line in lines), lines
