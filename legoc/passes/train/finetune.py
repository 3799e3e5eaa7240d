"""`finetune`: retrain a block's weights on the `search` data (option C).

Opt-in and separate from search and rewrite passes: it changes weights, never the graph.
Precondition: the rewrite pipeline ran, so the graph is the sliced block (every weight it reads
is a get_attr tensor or a module parameter). Every floating-point tensor the graph reads is
trained, the folded ablation constants included (they are biases now).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from legoc.ir.analysis import get_attr_tensor
from legoc.ir.core import IR
from legoc.passes.base import PassResult
from legoc.passes.rewrite.graph_edit import clone_ir
from legoc.task.metrics import Metric
from legoc.task.spec import Split
from legoc.task.training import TrainConfig, TrainReport, fit


@dataclass(frozen=True)
class Finetune:
    name = "finetune"
    split: Split
    metric: Metric
    config: TrainConfig
    reference: torch.Tensor | None = field(default=None, repr=False)  # full model's outputs

    def run(self, ir: IR) -> PassResult:
        out = clone_ir(ir)
        trained = _make_trainable(out.gm)
        report = fit(out.gm, out.input_names, self.split, self.metric, self.config, self.reference)
        for param in out.gm.parameters():
            param.requires_grad_(False)
        out.gm.eval()
        stats = {
            "weights_rewritten": len(trained) if report.best_epoch > 0 else 0,
            "params_trained": sum(t.numel() for t in trained),
            "epochs_run": report.epochs_run,
            "best_epoch": report.best_epoch,
            "val_loss_before": report.val_loss_before,
            "val_loss_after": report.val_loss_best,
            "val_metric_before": report.val_metric_before,
            "val_metric_after": report.val_metric_best,
        }
        return FinetuneResult(out, stats, report)


@dataclass
class FinetuneResult(PassResult):
    report: TrainReport | None = None


def _make_trainable(gm: torch.fx.GraphModule) -> list[torch.Tensor]:
    """Turn every floating-point tensor the graph reads into a trainable parameter."""
    trained: dict[str, torch.Tensor] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr" and node.target not in trained:
            tensor = get_attr_tensor(gm, node.target)
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                module_path, _, attr = node.target.rpartition(".")
                owner = gm.get_submodule(module_path) if module_path else gm
                delattr(owner, attr)
                param = nn.Parameter(tensor.detach().clone(), requires_grad=True)
                owner.register_parameter(attr, param)
                trained[node.target] = param
        elif node.op == "call_module":
            for name, param in gm.get_submodule(node.target).named_parameters():
                param.requires_grad_(param.is_floating_point())
                trained[f"{node.target}.{name}"] = param
    return list(trained.values())
