"""Shared pieces of the rewrite-pass tests: tiny IRs, hand-chosen masks, the masked oracle."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch import nn

from legoc.frontend.load import trace
from legoc.ir.analysis import get_attr_tensor
from legoc.ir.core import IR, build_ir
from legoc.scoring.scorer import Scorer, instrument
from legoc.task.metrics import METRICS
from legoc.task.spec import Split
from tests.helpers import labelled_data, trained_model

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
ATOL = 1e-5  # the rewrite is exact up to float32 rounding; never a looser default


def model_ir(
    model: torch.nn.Module,
    example: torch.Tensor,
    outputs: list[int] | None = None,
    scope: list[str] | None = None,
) -> IR:
    return build_ir(trace(model, ["x"]), ["x"], {"x": example[:2]}, outputs=outputs, scope=scope)


def tiny_ir(kind: str, outputs: list[int] | None = None) -> IR:
    """The trained tiny model of `kind` as an IR (example rows from the search data)."""
    model = trained_model(kind)  # first: labelled_data trains under no_grad on a cold cache
    data = labelled_data(kind, 8, 1, outputs)
    return model_ir(model, data["x"], outputs)


def random_ablation(ir: IR, seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Arbitrary (non-mean) constants per unit: a rewrite must be exact for any of them."""
    gen = torch.Generator().manual_seed(seed)
    return {
        name: scale * torch.randn(space.size, generator=gen)
        for name, space in sorted(ir.spaces.items())
    }


def cnn_ablation(ir: IR, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random constants, except conv1's: chosen so that relu(bn1(c)) == 1 in every channel, so
    a removed conv1 channel reaches the zero-padded conv2 as a non-zero constant (whose
    contribution then varies at the borders: the fold must add a constant map)."""
    values = random_ablation(ir, seed)
    bn = {
        name: get_attr_tensor(ir.gm, f"bn1.{name}").detach()
        for name in ("running_mean", "running_var", "weight", "bias")
    }
    std = (bn["running_var"] + 1e-5).sqrt()  # eps of nn.BatchNorm2d
    values["conv1"] = bn["running_mean"] + (1.0 - bn["bias"]) / bn["weight"] * std
    return values


def masked(ir: IR, removed_groups: list[int], ablation: dict[str, torch.Tensor]) -> IR:
    """`ir` with the given groups removed and their units replaced by `ablation`."""
    out = ir.with_kept(ir.mask_for(removed_groups))
    out.ablation = {k: v.clone() for k, v in ablation.items()}
    return out


def masked_oracle(ir: IR) -> torch.fx.GraphModule:
    """The unrewritten graph with the same ablation applied in-graph (what scoring ran)."""
    gm, ablates = instrument(ir)
    for name, module in ablates.items():
        module.set(torch.from_numpy(ir.kept[name].copy()), ir.ablation.get(name))
    return gm.eval()


def fresh_inputs(ir: IR, n: int = 9, seed: int = 1234) -> torch.Tensor:
    """Inputs never seen by the ablation values or the example rows (a different seed/scale)."""
    shape = ir.example_inputs["x"].shape[1:]
    return 2.0 * torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


def max_abs_diff(rewritten: IR, oracle: torch.fx.GraphModule, x: torch.Tensor) -> float:
    """Both graphs run in float64: the logits of the trained tiny models reach ~100, where one
    float32 ulp is 7.6e-6, so a float32 comparison at 1e-5 would measure rounding, not the
    rewrite (whose constants were still computed in float32)."""
    ours, theirs = copy.deepcopy(rewritten.gm).double(), copy.deepcopy(oracle).double()
    with torch.no_grad():
        return float((ours(x.double()) - theirs(x.double())).abs().max())


def groups_of(ir: IR, space: str) -> list[int]:
    """Indices of the groups that hold a unit of `space`."""
    return sorted({g.index for g in ir.groups for s, _ in g.members if s == space})


def assert_golden(text: str, name: str) -> None:
    """Compare with tests/golden/NAME; `pytest --update-golden` rewrites it instead."""
    if os.environ.get("LEGOC_TEST_UPDATE_GOLDEN"):
        (GOLDEN / name).write_text(text)
    expected = (GOLDEN / name).read_text()
    assert text == expected, f"IR text differs from tests/golden/{name}"


def groups_for(ir: IR, units: dict[str, list[int]]) -> list[int]:
    """The groups holding the named units (a unit's coupled partners go with it)."""
    return sorted(
        {
            int(ir.analysis.unit_group[ir.spaces[space].offset + u])
            for space, chosen in units.items()
            for u in chosen
        }
    )


class PaddedConvs(nn.Module):
    """Two zero-padded convs: a removed conv1 channel reaches conv2 as a constant whose
    contribution differs at the borders, so folding it needs a constant map, not a bias."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1, bias=False)
        self.fc = nn.Linear(3 * 5 * 5, 2)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv2(torch.relu(self.conv1(x)))), 1))


def padded_convs_ir() -> IR:
    torch.manual_seed(0)
    model = PaddedConvs().eval()
    return model_ir(model, torch.randn(2, 2, 5, 5))


def mean_ablation(ir: IR, kind: str, outputs: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Mean ablation values from a Scorer on search data (seed 1, never the test inputs)."""
    data = labelled_data(kind, 64, 1, outputs)
    scorer = Scorer(ir, Split("search", {"x": data["x"]}, data["y"]), METRICS["accuracy"])
    return scorer.values


# Hand-chosen masks on tiny models, as {space: [units]} (partners of coupled units follow).
CNN_UNITS = {"conv1": [1, 4], "fc1": [2], "fc2": [1]}  # fc2 unit 1 is unselected: dead
MLP_UNITS = {"fc1": [0, 1], "fc2": [3]}
CASES = ("mlp", "cnn", "cnn-mean", "cnn-all-convs", "cnn-all-fc1", "planted", "padded")


def case(name: str) -> IR:
    """A masked IR ready for the rewrite passes: kept mask plus ablation values."""
    if name == "mlp":
        ir = tiny_ir("mlp")
        return masked(ir, groups_for(ir, MLP_UNITS), random_ablation(ir, 0))
    if name.startswith("cnn"):
        ir = tiny_ir("cnn", [0, 3])
        units = {
            "cnn": CNN_UNITS,
            "cnn-mean": {"conv1": [0], "fc1": [5]},
            "cnn-all-convs": {"conv1": list(range(6))},
            "cnn-all-fc1": {"fc1": list(range(10))},
        }[name]
        values = mean_ablation(ir, "cnn", [0, 3]) if name == "cnn-mean" else cnn_ablation(ir)
        return masked(ir, groups_for(ir, units), values)
    if name == "planted":
        ir = tiny_ir("planted")
        return masked(ir, groups_of(ir, "noise"), random_ablation(ir, 0))
    if name == "padded":
        ir = padded_convs_ir()
        values = random_ablation(ir, 0)
        values["conv1"] = torch.tensor([0.5, 1.0, 1.5, 2.0])  # > 0: survives the ReLU
        return masked(ir, groups_for(ir, {"conv1": [1, 3]}), values)
    raise KeyError(name)


def dangling(ir: IR) -> list[str]:
    """Nodes whose value nobody reads (the output node aside)."""
    return [n.name for n in ir.gm.graph.nodes if n.op != "output" and not n.users]


def check_weights_fit_inputs(ir: IR) -> None:
    """Every Linear/Conv weight and BatchNorm parameter matches the tensor it is applied to."""
    for node in ir.gm.graph.nodes:
        if node.op != "call_function" or len(node.args) < 2:
            continue
        x, weight = node.args[0], node.args[1]
        if not isinstance(x, torch.fx.Node) or "tensor_meta" not in x.meta:
            continue
        in_shape = x.meta["tensor_meta"].shape
        if node.target is torch.nn.functional.linear:
            w = get_attr_tensor(ir.gm, weight.target)
            assert w.shape[1] == in_shape[-1], f"{node.name}: weight {tuple(w.shape)} vs {in_shape}"
        elif node.target in (torch.nn.functional.conv1d, torch.nn.functional.conv2d):
            w = get_attr_tensor(ir.gm, weight.target)
            assert w.shape[1] == in_shape[1], f"{node.name}: weight {tuple(w.shape)} vs {in_shape}"
        elif node.target is torch.nn.functional.batch_norm:
            for param in node.args[1:5]:
                if isinstance(param, torch.fx.Node):
                    tensor = get_attr_tensor(ir.gm, param.target)
                    assert tensor.shape == (in_shape[1],), f"{node.name}: {param.target}"


def run_search(
    p,
    ir,
    scorer,
    keep: float = 0.9,
    budget: float = 100,
    seed: int = 0,
    start=(),
    progress=None,
    deadline: float | None = None,
):
    """Run search pass `p` on `ir` (with the `start` groups removed first) in a context of
    `scorer` and a fresh budget of `budget` evaluations."""
    from legoc.passes.base import PassContext
    from legoc.scoring.budget import Budget

    ctx = PassContext(scorer, Budget(budget, scorer, deadline), keep, seed, progress)
    if start:
        ir = ir.with_kept(ir.mask_for(sorted(start)))
    return p.run(ir, ctx)
