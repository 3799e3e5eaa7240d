"""The IR (legoc/ir/core.py): its one deterministic text form, masks and sizes."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from legoc.frontend.load import trace
from legoc.ir.core import IR, build_ir
from tests.helpers import TinyResCNN, labelled_data, trained_model
from tests.passes.helpers import assert_golden

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def cnn_ir(model: nn.Module | None = None) -> IR:
    """The TinyResCNN restricted to outputs [0, 3], as `legoc inspect` shows it."""
    model = model if model is not None else trained_model("cnn")
    x = labelled_data("cnn", 4, 1, [0, 3])["x"]
    return build_ir(trace(model, ["x"]), ["x"], {"x": x[:2]}, outputs=[0, 3])


def test_text_matches_the_golden_file():
    assert_golden(cnn_ir().text(), "tiny_cnn.txt")


def test_text_is_deterministic_and_independent_of_weights_and_rows():
    first = cnn_ir().text()
    assert cnn_ir().text() == first
    torch.manual_seed(7)  # other weights, other example rows: the same text
    model = TinyResCNN().eval()
    x = torch.randn(2, 1, 8, 8)
    other = build_ir(trace(model, ["x"]), ["x"], {"x": x}, outputs=[0, 3]).text()
    assert other == first


def test_text_shows_the_batch_as_n_and_weights_by_shape_without_ids():
    text = cnn_ir().text()
    assert "%x: f32[N,1,8,8]" in text
    assert "param conv2.weight : f32[6,6,3,3]" in text
    assert re.search(r"0x[0-9a-f]{6,}", text) is None  # no object addresses
    assert "tensor(" not in text and "Parameter" not in text  # never a weight's values
    node_lines = [line for line in text.splitlines() if line.startswith("  %")]
    computed = [line for line in node_lines if "param " not in line]
    assert computed and all(re.search(r": f32\[N,[0-9,]+\]$", line) for line in computed)


def test_masks_remove_whole_groups_and_show_in_the_text():
    ir = cnn_ir()
    conv_group = ir.analysis.unit_group[ir.spaces["conv1"].offset + 2]
    other = ir.with_kept(ir.mask_for([int(conv_group)]))
    assert other.removed_groups() == [int(conv_group)]
    assert other.kept_units()["conv1"] == [0, 1, 3, 4, 5] == other.kept_units()["conv2"]
    assert "conv1: conv2d, 5/6 units kept" in other.text()
    assert ir.removed_groups() == []  # with_kept leaves the original alone


def graph_tensors(ir: IR) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of the traced model, by qualified name."""
    return dict(ir.gm.named_parameters()) | dict(ir.gm.named_buffers())


def test_param_count_is_the_float_params_and_buffers_the_graph_reads():
    ir = cnn_ir()
    read = {n.target for n in ir.gm.graph.nodes if n.op == "get_attr"}
    expected = sum(
        t.numel() for name, t in graph_tensors(ir).items() if name in read and t.is_floating_point()
    )
    assert ir.param_count() == expected
    # by hand: conv1 6*9+6, bn1 4*6, conv2 6*6*9+6, bn2 4*6, fc1 10*96+10, fc2 5*10+5
    assert expected == 60 + 24 + 330 + 24 + 970 + 55 == 1463
    # the model's own state: the same, less BatchNorm's integer num_batches_tracked
    state = trained_model("cnn").state_dict()
    assert expected == sum(t.numel() for t in state.values() if t.is_floating_point())


def test_param_count_includes_modules_called_whole():
    class WithGroupNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm, self.fc = nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.norm(self.conv(x)).mean((2, 3)))

    model = WithGroupNorm().eval()
    ir = build_ir(trace(model, ["x"]), ["x"], {"x": torch.randn(2, 1, 6, 6)})
    assert ir.param_count() == sum(p.numel() for p in model.parameters()) == 40 + 8 + 15


def test_text_names_no_coupling_without_a_partner():
    class SelfAdd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(3, 2)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.b(h + h)

    ir = build_ir(trace(SelfAdd().eval(), ["x"]), ["x"], {"x": torch.randn(2, 4)})
    assert "coupled with  by" not in ir.text()
    assert all(g.coupled_by == () for g in ir.groups)


def test_sliced_macs_counts_kept_rows_columns_and_positions_by_hand():
    """The shapes-like tiny CNN: MACs per row of every Linear/Conv, and after a removal."""
    import numpy as np
    import torch.nn.functional as F

    model = trained_model("cnn")
    data = labelled_data("cnn", 4, 1)
    ir = build_ir(trace(model, ["x"]), ["x"], {"x": data["x"][:2]})
    want = 0
    for node in ir.gm.graph.nodes:
        if node.op == "call_function" and node.target in (F.linear, F.conv2d):
            weight = ir.gm.get_parameter(node.args[1].target)
            out = node.meta["tensor_meta"].shape
            positions = out[2] * out[3] if node.target is F.conv2d else 1
            want += weight.numel() * positions
    full = {name: np.ones(space.size, dtype=bool) for name, space in ir.spaces.items()}
    assert ir.sliced_macs(full) == want == ir.macs_per_row()
    single = next(g for g in ir.removable_groups() if len(ir.groups[g].members) == 1)
    assert ir.sliced_macs(ir.mask_for([single])) == want - ir.groups[single].macs
    group = ir.removable_groups()[0]  # coupled by the residual add: conv2 reads conv1's unit
    kept = ir.mask_for([group])  # so the group's own count holds conv2[0, 0] twice (a bound)
    assert want - ir.groups[group].macs <= ir.sliced_macs(kept) < want
    ir.objective = "macs"
    assert ir.sliced_cost(kept) == ir.sliced_macs(kept)
    assert ir.group_cost(group) == ir.groups[group].macs
