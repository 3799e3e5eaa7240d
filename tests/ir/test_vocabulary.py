"""The op vocabulary and the handler registry agree: every kind has one handler."""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from legoc.ir.handlers import HANDLERS, SOURCES
from legoc.ir.vocabulary import KINDS, classify


def test_every_kind_has_a_handler_and_every_handler_a_kind():
    assert set(HANDLERS) == set(KINDS) | {"producer"}
    assert set(HANDLERS) >= SOURCES


def test_no_op_belongs_to_two_kinds():
    for attr in ("functions", "methods", "modules"):
        seen: dict = {}
        for kind, ops in KINDS.items():
            for op in getattr(ops, attr):
                assert seen.setdefault(op, kind) == kind, (op, seen[op], kind)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 4))
        self.act = nn.ReLU()

    def forward(self, x):
        h = self.act(F.linear(x, self.w))
        a, b = torch.split(h, 3, dim=-1)
        return torch.pow((a * b).mean(dim=0), 2) + torch.erf(h).sum()


def test_classify_names_each_node_kind():
    gm = torch.fx.symbolic_trace(_Net())
    kinds = {n.name: classify(gm, n) for n in gm.graph.nodes}
    assert kinds["linear"] == "producer" and kinds["act"] == "unary"
    assert kinds["split"] == "split" and kinds["getitem"] == "getitem"
    assert kinds["mul"] == "binary" and kinds["mean"] == "reduce" and kinds["pow_1"] == "unary"
    assert kinds["erf"] is None  # not in the vocabulary: the units it reads are frozen
    assert kinds["add"] == "binary" and kinds["x"] is None
