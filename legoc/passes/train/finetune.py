"""`finetune`: retrain a block's weights on the `search` data (option C).

Opt-in and separate from search and rewrite passes: it changes weights, never the graph.
Precondition: the rewrite pipeline ran, so the graph is the sliced block (every weight it reads
is a get_attr tensor or a module parameter). Every floating-point tensor the graph reads is
trained, the folded ablation constants included (they are biases now).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from legoc.ir.analysis import get_attr_tensor
from legoc.ir.core import IR
from legoc.passes.base import PassContext, PassResult, PreconditionFailed
from legoc.passes.rewrite.graph_edit import clone_ir
from legoc.task.training import TrainConfig, TrainReport, fit


@dataclass(frozen=True)
class Finetune:
    """Retrain on the context scorer's split, against its metric (and, for kl, the full
    model's outputs), seeded by the context's seed."""

    epochs: int = 5
    lr: float = 1.0e-3
    name = "finetune"
    kind = "train"

    def check(self, ir: IR, ctx: PassContext) -> None:
        """Precondition: a scorer in the context (its split is the training data)."""
        if ctx.scorer is None:
            raise PreconditionFailed("pass finetune: needs a scorer (its split) in its context")

    def run(self, ir: IR, ctx: PassContext) -> PassResult:
        self.check(ir, ctx)
        scorer = ctx.scorer
        config = TrainConfig(epochs=self.epochs, lr=self.lr, seed=ctx.seed)
        out = clone_ir(ir)
        trained = _make_trainable(out.gm)
        reference = scorer.reference.outputs
        report = fit(
            out.gm,
            out.input_names,
            scorer.split,
            scorer.metric,
            config,
            reference,
            getattr(scorer, "device", None),  # a stand-in scorer may only hold the split
        )
        for param in out.gm.parameters():
            param.requires_grad_(False)
        out.gm.eval()
        rewritten = len(trained) if report.best_epoch > 0 else 0
        stats = {
            "weights_rewritten": rewritten,
            "params_trained": sum(t.numel() for t in trained),
            "epochs_run": report.epochs_run,
            "best_epoch": report.best_epoch,
            "val_loss_before": report.val_loss_before,
            "val_loss_after": report.val_loss_best,
            "val_metric_before": report.val_metric_before,
            "val_metric_after": report.val_metric_best,
        }
        return FinetuneResult(out, stats, changed=rewritten > 0, report=report)


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
