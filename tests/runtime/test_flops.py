"""MACs per example counted from the ONNX graph: Gemm, MatMul and Conv, by hand-computed sizes."""

from __future__ import annotations

import onnx
import torch
from torch import nn

from legoc.export.writer import module_to_onnx
from legoc.runtime.flops import macs_per_example


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)  # 8x8 output
        self.grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        x = torch.max_pool2d(self.grouped(torch.relu(self.conv(x))), 2)
        return self.fc(x.flatten(1))


class Attention(nn.Module):
    def forward(self, x):  # (N, 6, 8): x @ x^T then @ x
        return (x @ x.transpose(1, 2)) @ x


def onnx_of(module: nn.Module, example: torch.Tensor) -> onnx.ModelProto:
    return module_to_onnx(module, ["x"], {"x": example})


def test_conv_and_gemm_macs():
    got = macs_per_example(onnx_of(ConvNet().eval(), torch.zeros(2, 2, 8, 8)))
    conv = 4 * 8 * 8 * (2 * 3 * 3)
    grouped = 4 * 8 * 8 * (2 * 3 * 3)  # each output channel sees in/groups = 2 channels
    fc = 5 * 64
    assert got == conv + grouped + fc


def test_matmul_macs_and_the_batch_does_not_count():
    model = onnx_of(Attention(), torch.zeros(3, 6, 8))
    assert macs_per_example(model) == 6 * 6 * 8 + 6 * 8 * 6


def test_mlp_block_macs_equal_its_weight_count():
    mlp = nn.Sequential(nn.Linear(6, 7), nn.ReLU(), nn.Linear(7, 4)).eval()
    assert macs_per_example(onnx_of(mlp, torch.zeros(2, 6))) == 6 * 7 + 7 * 4
