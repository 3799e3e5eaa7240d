"""DeBERTa's share_att_key: q and k project the relative positions too, one weight applied
twice. The second use carries the same units when only attention scores read it, so a head's
q, k and v rows are one unit and slicing the shared weight serves both uses; read elsewhere,
the second use freezes the heads with the reason."""

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
    assert all(sorted({m[0] for m in g.members}) == ["k", "q", "v"] for g in heads)
    assert all(len(g.members) == 3 * DIM for g in heads)
    masked, block = without_two_heads(ir, heads)
    assert len(masked.kept_units()["k"]) == 2 * DIM
    with torch.no_grad():
        assert_float_close(block.gm(fresh), masked_model(masked)(fresh))
    split = Split("search", {"x": fresh}, None)
    diff = export_block(block, masked_model(masked), split, tmp_path / "block.onnx", {})
    assert diff <= PARITY_TOLERANCE


def test_a_second_use_read_beyond_the_scores_freezes_the_heads():
    _model, ir = captured(share_att_key=True, reads_positions=True)
    heads = heads_of(ir)
    assert len(heads) == HEADS
    assert all(g.frozen and g.frozen.startswith("a weight applied twice") for g in heads)
    lines = [r.line() for r in frozen_units(ir)]
    assert any(line.startswith("k: 16/16 units frozen by ") for line in lines), lines
