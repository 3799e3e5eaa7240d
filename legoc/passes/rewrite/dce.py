"""`dce`: drop nodes nobody reads and the parameters only they used."""

from __future__ import annotations

from dataclasses import dataclass

from legoc.ir.core import IR
from legoc.passes.base import PassContext, PassResult
from legoc.passes.rewrite.graph_edit import clone_ir


@dataclass(frozen=True)
class DeadCodeElimination:
    name = "dce"
    kind = "rewrite"

    def run(self, ir: IR, ctx: PassContext | None = None) -> PassResult:
        out = clone_ir(ir)
        gm = out.gm
        before_nodes = len(gm.graph.nodes)
        before_params = out.param_count()
        gm.graph.eliminate_dead_code()
        used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
        for node in gm.graph.nodes:  # modules called whole keep all their tensors
            if node.op == "call_module":
                module = gm.get_submodule(node.target)
                used |= {
                    f"{node.target}.{name}"
                    for name, _ in [*module.named_parameters(), *module.named_buffers()]
                }
        tensors_removed = 0
        for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
            if name not in used:
                module_path, _, attr = name.rpartition(".")
                owner = gm.get_submodule(module_path) if module_path else gm
                delattr(owner, attr)
                tensors_removed += 1
        gm.delete_all_unused_submodules()
        gm.graph.lint()
        gm.recompile()
        out.refresh()
        stats = {
            "nodes_removed": before_nodes - len(gm.graph.nodes),
            "tensors_removed": tensors_removed,
            "params_removed": before_params - out.param_count(),
        }
        return PassResult(out, stats, changed=any(stats.values()))
