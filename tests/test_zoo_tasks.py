"""The zoo benchmark's teacher tasks (benchmarks/zoo.py): a random-init model whose logits do
not depend on its input would give every row one label, and a search nothing to do."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

ZOO = Path(__file__).resolve().parent.parent / "benchmarks" / "zoo.py"


def load_zoo():
    spec = importlib.util.spec_from_file_location("zoo_benchmark", ZOO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_zero_head_is_woken_so_the_labels_depend_on_the_input():
    zoo = load_zoo()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 10))
    nn.init.zeros_(model[3].weight)  # as ViT's head starts
    nn.init.constant_(model[3].bias, 0.0)
    model[3].bias.data[7] = 1.0  # one class always wins
    x = torch.randn(64, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
        classes = zoo.balanced_classes(logits, 4)
        assert zoo.majority_share(logits[:, classes].argmax(1)) == 1.0
        zoo.wake_flat_logits(model)
        logits = model(x)
    assert model[3].weight.abs().sum() > 0 and not model[3].bias.any()
    classes = zoo.balanced_classes(logits, 4)
    assert zoo.majority_share(logits[:, classes].argmax(1)) <= 0.5
