"""`fold-ablations`: fold each removed unit's constant into the next layer and cut its wire.

A removed unit carries an input-independent value (its ablation constant, passed through
per-unit ops) into each Linear/Conv that reads it. That contribution is computed once and
added to the reader's bias (or, where zero padding makes it vary over positions, added as a
constant map right after the reader), and the reader's weight columns for the unit are zeroed.
The graph then computes exactly what the masked model computes, whatever the removed units'
activations are, so `slice-units` can drop them.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F

from legoc.ir import ops
from legoc.ir.analysis import LINEAR_OPS, get_attr_tensor
from legoc.ir.core import IR
from legoc.ir.graph import arg
from legoc.ir.group_norm import held_group_norm
from legoc.ir.handlers.norm import norm_args
from legoc.ir.masking import masked_model
from legoc.ir.tokens import dynamic_tokens, sequence_of, token_axis, with_length
from legoc.passes.base import PassContext, PassResult
from legoc.passes.rewrite.graph_edit import (
    add_tensor,
    applied_weights,
    clone_ir,
    nodes_by_name,
    set_arg,
    set_shared_tensor,
    set_tensor,
)
from legoc.passes.rewrite.group_norms import hold_group_norm

# a removed head's values reach the output projection through softmax rows that sum to one
# only up to float32 rounding (a few steps): uniform within 64 steps is one bias constant
UNIFORM_TOLERANCE = 64 * torch.finfo(torch.float32).eps
FOLDED = "legoc.folded"  # node.meta mark on the add that completes a reader's output


def removed_ids(ir: IR) -> np.ndarray:
    """Global unit id -> True when the unit is removed."""
    removed = np.zeros(sum(s.size for s in ir.spaces.values()), dtype=bool)
    for name, space in ir.spaces.items():
        removed[space.offset : space.offset + space.size] = ~ir.kept[name]
    return removed


def capture_inputs(ir: IR, node_names: set[str]) -> dict[str, torch.Tensor]:
    """First argument of each named node, in the masked model on one example row; with a
    dynamic token axis, one position longer than the search data where the graph accepts it,
    so a constant that varies over positions also has its tail (`legoc.ir.tokens`)."""
    rows = {name: ir.example_inputs[name][:1] for name in ir.input_names}
    lengths = sequence_of(ir.gm)
    tokens = dynamic_tokens(lengths)
    if tokens:
        longer = int(rows[tokens[0]].shape[1]) + 1
        if lengths["max"] is None or longer <= lengths["max"]:
            rows = with_length(rows, tokens, longer)
    return first_arguments(masked_model(ir), [rows[n] for n in ir.input_names], node_names)


def first_arguments(
    gm: torch.fx.GraphModule, inputs: list[torch.Tensor], node_names: set[str]
) -> dict[str, torch.Tensor]:
    """The value each named node receives as its first argument when `gm` runs `inputs`."""
    captured: dict[str, torch.Tensor] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            if n.name in node_names:
                captured[n.name] = self.env[n.args[0]].detach().clone()
            return super().run_node(n)

    with torch.no_grad():
        Recorder(gm).run(*inputs)
    return captured


def removed_positions(ids: np.ndarray, removed: np.ndarray) -> np.ndarray:
    return (ids >= 0) & removed[np.maximum(ids, 0)]


def _already_folded(gm, node, ids, removed) -> bool:
    """Nothing to fold when no removed unit reaches `node` or its columns are already zero."""
    gone = removed_positions(ids, removed)
    if not gone.any():
        return True
    weight = get_attr_tensor(gm, node.args[1].target)
    return not bool(weight[:, torch.from_numpy(gone)].any())


def contracted_axis(node: torch.fx.Node, ndim: int) -> int:
    return ndim - 1 if node.target in LINEAR_OPS else 1


@dataclass(frozen=True)
class FoldAblations:
    name = "fold-ablations"
    kind = "rewrite"

    def run(self, ir: IR, ctx: PassContext | None = None) -> PassResult:
        """Precondition: `ir.ablation` holds the values removed units were scored with."""
        removed = removed_ids(ir)
        nodes = nodes_by_name(ir.gm)
        readers = ir.analysis.norm_readers  # rebuilt from the norm's carriers at slicing
        uses = [
            u
            for u in ir.analysis.consumers
            if u.node not in readers and not _already_folded(ir.gm, nodes[u.node], u.ids, removed)
        ]
        norms = held_norms_needed(ir, removed)
        out = clone_ir(ir)
        stats = {"consumers_folded": 0, "constants_added": 0}
        if not uses and not norms:
            return PassResult(out, stats, changed=False)
        missing = [s for s, kept in ir.kept.items() if not kept.all() and s not in ir.ablation]
        if missing:
            raise ValueError(f"no ablation values for {missing}: score the IR first")
        inputs = capture_inputs(ir, {u.node for u in uses} | set(norms))
        nodes = nodes_by_name(out.gm)
        shared = applied_weights(ir.gm)
        for use in uses:
            weight = get_attr_tensor(ir.gm, nodes[use.node].args[1].target)  # before any cut
            args = (use.ids, removed, inputs[use.node], weight, stats)
            self._fold(out.gm, nodes[use.node], *args, shared=weight_of(use, nodes) in shared)
        for name, gone in norms.items():
            hold_norm(out.gm, nodes[name], gone, inputs[name])
        if norms:  # reported only where the model has a norm over units (not to churn stats)
            stats["norms_held"] = len(norms)
        out.gm.graph.lint()
        out.gm.recompile()
        out.refresh()
        changed = stats["consumers_folded"] + len(norms) > 0
        return PassResult(out, stats, changed=changed)

    def _fold(self, gm, node, ids, removed, x, weight, stats, shared=False) -> None:
        """`weight`: the reader's weight before any fold cut it. `shared`: it is applied by
        several readers (one bias for all), so this use's constant is added after it."""
        axis = contracted_axis(node, x.dim())
        gone = torch.from_numpy(removed_positions(ids, removed))
        shape = [1] * x.dim()
        shape[axis] = -1
        x_removed = x * gone.reshape(shape).to(x.dtype)
        weight_node = node.args[1]
        rest = node.args[3:]
        with torch.no_grad():
            delta = node.target(x_removed, weight, None, *rest)
            new_weight = weight.detach().clone()
            new_weight[:, gone] = 0
        if shared:  # the same columns go at every use (the analysis coupled them)
            set_shared_tensor(gm, weight_node.target, new_weight)
        else:
            set_tensor(gm, weight_node, new_weight)
        stats["consumers_folded"] += 1
        channel = delta.dim() - 1 if node.target in LINEAR_OPS else 1
        # every axis but the channel: the captured row makes the batch axis (wherever it
        # sits, e.g. axis 1 in torch's sequence-first attention) one long
        other_dims = [d for d in range(delta.dim()) if d != channel]
        flat = delta.mean(dim=other_dims, keepdim=True) if other_dims else delta
        uniform = (delta - flat).abs().max() <= UNIFORM_TOLERANCE * (1 + float(delta.abs().max()))
        if uniform and not shared:
            self._add_to_bias(gm, node, flat.reshape(-1))
            return
        if uniform:  # keep only the channel axis: it broadcasts over batch and positions
            delta = flat.reshape([-1] + [1] * (delta.dim() - 1 - channel))
            if not bool(delta.any()):
                return
        base = weight_node.target.rsplit(".", 1)[0]
        kernel = self._ones_kernel(node, x_removed, weight, gone)
        if kernel is not None:  # per-channel constants: recompute the map from ones
            with gm.graph.inserting_after(node):
                param = gm.graph.get_attr(add_tensor(gm, f"{base}.legoc_folded_kernel", kernel))
            with gm.graph.inserting_after(param):
                const = gm.graph.call_function(
                    ops.constant_channel_conv, (node.args[0], param, *node.args[3:6])
                )
        elif token_axis(node) is not None and not uniform:  # over positions: cut to the count
            with gm.graph.inserting_after(node):
                table = gm.graph.get_attr(add_tensor(gm, f"{base}.legoc_folded", delta))
            with gm.graph.inserting_after(table):
                const = gm.graph.call_function(ops.token_constant, (node, table, token_axis(node)))
        else:  # constants that vary over positions (or one use's constants): store them
            with gm.graph.inserting_after(node):
                const = gm.graph.get_attr(add_tensor(gm, f"{base}.legoc_folded", delta))
        with gm.graph.inserting_after(const):
            added = gm.graph.call_function(operator.add, (node, const))
        added.meta[FOLDED] = True  # the reader's units now come out of this node
        node.replace_all_uses_with(added, delete_user_cb=lambda user: user not in (added, const))
        stats["constants_added"] += 1

    @staticmethod
    def _ones_kernel(node, x_removed, weight, gone) -> torch.Tensor | None:
        """sum_c weight[:, c] * value_c when each removed channel is one value everywhere."""
        if node.target in LINEAR_OPS or node.args[6] != 1:
            return None
        spatial = list(range(2, x_removed.dim()))
        values = x_removed.mean(dim=spatial, keepdim=True)
        if (x_removed - values).abs().max() > UNIFORM_TOLERANCE * (1 + float(values.abs().max())):
            return None
        per_channel = values[0].reshape(1, -1, *[1] * len(spatial)) * gone.reshape(
            1, -1, *[1] * len(spatial)
        ).to(values.dtype)
        return (weight.detach() * per_channel).sum(dim=1, keepdim=True)

    def _add_to_bias(self, gm, node, delta: torch.Tensor) -> None:
        if not bool(delta.any()):
            return
        bias_node = arg(node, 2, "bias")
        if bias_node is None:
            weight_target = node.args[1].target
            target = add_tensor(
                gm, f"{weight_target.rsplit('.', 1)[0]}.legoc_bias", delta, as_parameter=True
            )
            with gm.graph.inserting_before(node):
                bias_node = gm.graph.get_attr(target)
            set_arg(node, 2, "bias", bias_node)
            return
        bias = get_attr_tensor(gm, bias_node.target)
        set_tensor(gm, bias_node, bias.detach() + delta.to(bias.dtype))


def weight_of(use, nodes) -> str:
    return nodes[use.node].args[1].target


def held_norms_needed(ir: IR, removed: np.ndarray) -> dict[str, np.ndarray]:
    """Norm node -> its removed channels, for each norm over units read by a Linear/Conv (or
    restating its units) that is not yet held at exactly those channels."""
    nodes = nodes_by_name(ir.gm)
    needed = {}
    restating = ir.analysis.restated_norms
    for name in sorted(set(ir.analysis.norm_readers.values()) | restating):
        node = nodes[name]
        gone = removed_positions(ir.analysis.layouts[node.args[0].name].ids, removed)
        if node.target is ops.carried_norm:  # sliced already: its sums are fixed
            if gone.any():
                raise ValueError(
                    f"norm {name} was sliced already and cannot fold more removed channels: "
                    "fold and slice the source IR with the whole mask"
                )
            continue
        if node.target in (ops.held_norm, held_group_norm):
            at = 3 if node.target is ops.held_norm else 5
            keep = get_attr_tensor(ir.gm, node.args[at].target).cpu().numpy()
            if np.array_equal(keep, ~gone):
                continue
        elif not gone.any():
            continue
        needed[name] = gone
    return needed


def hold_norm(gm, node, gone: np.ndarray, x: torch.Tensor) -> None:
    """Rewrite a norm over units into `held_norm`, in place (a restating norm's space names
    its node): its removed channels read their constant (captured in the masked model, `x`),
    whatever the graph computes there."""
    if node.target in (F.group_norm, held_group_norm):
        return hold_group_norm(gm, node, gone, x)
    weight, bias, rms = norm_args(node)
    eps = node.args[5] if node.target is ops.held_norm else _eps(node, rms)
    keep = torch.from_numpy(~gone)
    const = (x * torch.from_numpy(gone).to(x.dtype)).detach()
    flat = const.reshape(-1, const.shape[-1])
    if (flat - flat[:1]).abs().max() <= UNIFORM_TOLERANCE * (1 + float(flat.abs().max())):
        const = flat[0].clone()  # one constant per channel, at every position and length
    base = node.name
    with gm.graph.inserting_before(node):
        keep_node = gm.graph.get_attr(add_tensor(gm, f"legoc_{base}_keep", keep))
        const_node = gm.graph.get_attr(add_tensor(gm, f"legoc_{base}_const", const))
    node.target, node.kwargs = ops.held_norm, {}
    node.args = (node.args[0], weight, bias, keep_node, const_node, eps, rms)


def _eps(node: torch.fx.Node, rms: bool) -> float | None:
    index = 3 if rms else 4
    eps = node.args[index] if len(node.args) > index else node.kwargs.get("eps")
    return 1e-5 if eps is None and not rms else eps
