"""The aten ops opset 17 lacks, written out for the block exporter: checked in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from legoc.export.writer import module_to_onnx
from tests.helpers import assert_float_close


class RmsNorms(nn.Module):
    """F.rms_norm with a weight and eps, and without either (eps: the dtype's epsilon)."""

    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 2.0, width))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, 1e-6) - F.rms_norm(x, (x.shape[-1],))


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
def test_rms_norm_exports_and_matches_torch(scale):
    module = RmsNorms(8).eval()
    x = scale * torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0))
    model = module_to_onnx(module, ["x"], {"x": x})
    onnx.checker.check_model(model, full_check=True)
    assert "ReduceMean" in {node.op_type for node in model.graph.node}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    fresh = scale * torch.randn(6, 5, 8, generator=torch.Generator().manual_seed(1))
    (got,) = session.run(None, {"x": fresh.numpy()})
    with torch.no_grad():
        assert_float_close(torch.from_numpy(np.asarray(got)), module(fresh))


class Diffs(nn.Module):
    """torch.diff as transformers' packed-sequence check writes it (prepend, last dim), twice
    along the first dim, and with an append."""

    def forward(self, x):
        first = torch.diff(x, prepend=x[:, :1] - 1, dim=-1)
        second = torch.diff(x, n=2, dim=0)
        third = torch.diff(x, dim=1, append=x[:, -1:] * 2)
        runs = (first > 0).cumsum(-1)  # a bool cumsum (int64 in torch)
        return first.sum(0) + second.sum(0) + third.sum(0) + runs.sum(0) + x.cumsum(0).sum(0)


def test_diff_exports_and_matches_torch():
    module = Diffs().eval()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    model = module_to_onnx(module, ["x"], {"x": x})
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    fresh = torch.randn(7, 6, generator=torch.Generator().manual_seed(1))
    (got,) = session.run(None, {"x": fresh.numpy()})
    with torch.no_grad():
        assert_float_close(torch.from_numpy(np.asarray(got)), module(fresh))
