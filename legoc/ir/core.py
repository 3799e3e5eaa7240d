"""The IR: a torch.fx GraphModule plus its unit spaces, dependency groups and kept-unit mask.

The graph stays a plain GraphModule (analyses annotate `node.meta`); the side table here says
which units exist, how they are grouped and which are kept. `IR.text()` is the one
deterministic text form used by `legoc inspect` and golden tests.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F

from legoc.errors import LegocError
from legoc.ir import ops
from legoc.ir.analysis import Analysis, analyze
from legoc.ir.cost import output_positions
from legoc.ir.graph import get_attr_tensor
from legoc.ir.shapes import propagate_shapes, run_quietly  # noqa: F401 - run_quietly re-exported
from legoc.ir.text import ir_text
from legoc.ir.weight_rows import merge_rows
from legoc.ir.weight_uses import drop_repeated_uses


@dataclass
class IR:
    gm: torch.fx.GraphModule
    input_names: list[str]
    example_inputs: dict[str, torch.Tensor]  # a batch of 2 rows, for shapes and exports
    scope: list[str] | None = None
    analysis: Analysis = field(init=False)
    kept: dict[str, np.ndarray] = field(default_factory=dict)  # space -> bool per unit
    ablation: dict[str, torch.Tensor] = field(default_factory=dict)  # space -> value per unit
    objective: str = "params"  # what searches minimise: "params" or "macs" (per input row)

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Recompute shapes and the unit analysis after the graph changed."""
        propagate_shapes(self.gm, self.example_inputs, self.input_names)
        self.analysis = analyze(self.gm, self.scope)
        for name, space in self.analysis.spaces.items():
            if name not in self.kept or len(self.kept[name]) != space.size:
                self.kept[name] = np.ones(space.size, dtype=bool)

    # -- masks ------------------------------------------------------------------------
    @property
    def spaces(self):
        return self.analysis.spaces

    @property
    def groups(self):
        return self.analysis.groups

    def removable_groups(self) -> list[int]:
        """Groups a search may remove: not frozen, and not derived from others (`follows`)."""
        return [g.index for g in self.groups if g.frozen is None and not g.follows]

    def group_kept(self, index: int) -> bool:
        space, unit = self.groups[index].members[0]
        return bool(self.kept[space][unit])

    def mask_for(self, removed_groups) -> dict[str, np.ndarray]:
        """The kept-unit mask with the given groups removed (all others kept), and every group
        that follows others (a shared KV head) removed exactly when all of those are."""
        kept = {name: np.ones(space.size, dtype=bool) for name, space in self.spaces.items()}
        removed = set(removed_groups)
        derived = [g for g in removed if self.groups[g].follows]
        if derived:
            raise ValueError(
                f"group {derived[0]} follows groups {list(self.groups[derived[0]].follows)} "
                "(a KV head shared by query heads): remove those instead"
            )
        removed |= {g.index for g in self.groups if g.follows and removed.issuperset(g.follows)}
        for index in removed:
            for space, unit in self.groups[index].members:
                kept[space][unit] = False
        return kept

    def removed_groups(self) -> list[int]:
        return [g.index for g in self.groups if not self.group_kept(g.index)]

    def with_kept(self, kept: dict[str, np.ndarray]) -> IR:
        other = copy.copy(self)
        other.kept = {k: v.copy() for k, v in kept.items()}
        return other

    # -- sizes ------------------------------------------------------------------------
    def param_count(self) -> int:
        """Float elements of every parameter and buffer the graph reads. For a block (after the
        rewrite passes) this is its params (`params.block`): every tensor a block reads is one of
        its weights; in a source model, buffers are not parameters (see `buffer_count`)."""
        return sum(t.numel() for t in self._float_tensors().values())

    def buffer_count(self) -> int:
        """Float elements of the buffers the graph reads: in a source model, its BatchNorm
        statistics and the like, which `model.parameters()` does not count."""
        return sum(
            t.numel()
            for t in self._float_tensors().values()
            if not isinstance(t, torch.nn.Parameter)
        )

    def _float_tensors(self) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        for node in self.gm.graph.nodes:
            if node.op == "get_attr":
                tensors[node.target] = get_attr_tensor(self.gm, node.target)
            elif node.op == "call_module":
                module = self.gm.get_submodule(node.target)
                for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
                    tensors[f"{node.target}.{name}"] = tensor
        return {
            name: t
            for name, t in tensors.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point()
        }

    def macs_per_row(self) -> int:
        """Multiply-accumulates of the Linear/Conv layers for one input row: a deterministic
        cost measure, unlike a timing."""
        return self.sliced_macs(self.mask_for([]))

    def group_cost(self, group: int) -> int:
        """What removing the group saves under the objective (at least 1, for ratios)."""
        g = self.groups[group]
        return max(g.macs if self.objective == "macs" else g.params, 1)

    def sliced_cost(self, kept: dict[str, np.ndarray]) -> int:
        if self.objective == "macs":
            return self.sliced_macs(kept)
        return self.sliced_param_count(kept)

    def sliced_macs(self, kept: dict[str, np.ndarray], multiple: int = 1) -> int:
        """Multiply-accumulates per input row of the Linear/Conv layers once the units not in
        `kept` are sliced away (kept rows x kept columns x kernel x output positions).

        `multiple` > 1 counts conv channels at the width `align-channels` stores them
        (`stored_width`): what onnxruntime computes, padding included."""
        a = self.analysis
        removed = np.zeros(sum(s.size for s in a.spaces.values()), dtype=bool)
        for name, space in a.spaces.items():
            removed[space.offset : space.offset + space.size] = ~kept[name]
        columns = {use.node: use.ids for use in a.consumers}
        rows_of = {
            space.node: self.stored_width(space.name, int(kept[space.name].sum()), multiple)
            for space in a.spaces.values()
        }
        total = 0
        for node in self.gm.graph.nodes:
            if node.op != "call_function" or node.target not in (F.linear, F.conv1d, F.conv2d):
                continue
            weight_node = node.args[1]
            if not (isinstance(weight_node, torch.fx.Node) and weight_node.op == "get_attr"):
                continue
            weight = get_attr_tensor(self.gm, weight_node.target)
            rows = rows_of.get(node.name, weight.shape[0])
            ids = columns.get(node.name)
            if ids is None:
                cols = weight.shape[1]
            elif multiple > 1:
                cols = self._stored_columns(ids, removed, kept, multiple)
            else:
                cols = int(((ids < 0) | ~removed[np.maximum(ids, 0)]).sum())
            kernel = weight.numel() // (weight.shape[0] * weight.shape[1])
            total += rows * cols * kernel * output_positions(node)
        return total

    def stored_width(self, space: str, kept: int, multiple: int) -> int:
        """The width `align-channels` stores a conv2d space's `kept` channels at: rounded up to
        `multiple`, unless that is wider than the source layer (then left as is)."""
        unit_space = self.spaces[space]
        if multiple <= 1 or unit_space.kind != "conv2d" or kept == 0:
            return kept
        padded = -(-kept // multiple) * multiple
        return padded if padded <= unit_space.size else kept

    def _stored_columns(
        self, ids: np.ndarray, removed: np.ndarray, kept: dict[str, np.ndarray], multiple: int
    ) -> int:
        """A reader's input columns at stored widths: each space's kept columns scaled by its
        stored / kept units (a flattened Linear reads each channel at several positions)."""
        cols = int((ids < 0).sum())
        for name, space in self.spaces.items():
            inside = ids[(ids >= space.offset) & (ids < space.offset + space.size)]
            if not len(inside):
                continue
            units = int(kept[name].sum())
            kept_cols = int((~removed[inside]).sum())
            if units:
                cols += kept_cols * self.stored_width(name, units, multiple) // units
        return cols

    def sliced_param_count(self, kept: dict[str, np.ndarray]) -> int:
        """Parameters left once the units not in `kept` are sliced away: producer rows, reader
        columns and per-unit parameters shrink; everything else stays. Exact for slicing; the
        constants fold-ablations adds and the BatchNorms fold-batch-norm merges are not counted."""
        a = self.analysis
        removed = np.zeros(sum(s.size for s in a.spaces.values()), dtype=bool)
        for name, space in a.spaces.items():
            removed[space.offset : space.offset + space.size] = ~kept[name]
        nodes = {n.name: n for n in self.gm.graph.nodes}
        columns = {use.node: use.ids for use in a.consumers}

        def kept_slots(ids: np.ndarray) -> int:
            return int(((ids < 0) | ~removed[np.maximum(ids, 0)]).sum())

        total = self.param_count()
        for space in (s for s in a.spaces.values() if s.node not in a.reapplied):
            weight = get_attr_tensor(self.gm, space.weight)
            rows = int(kept[space.name].sum())
            if space.kind == "norm":  # a scale (and shift) per channel
                total -= (space.size - rows) * (2 if space.bias else 1)
                continue
            if space.kind == "embedding":  # a column of the table per unit
                total -= (space.size - rows) * weight.shape[0]
                continue
            node = nodes[space.node]
            cols = kept_slots(columns[node.name]) if node.name in columns else weight.shape[1]
            per_entry = weight.numel() // (weight.shape[0] * weight.shape[1])
            total -= weight.numel() - rows * cols * per_entry
            if space.bias:
                total -= weight.shape[0] - rows
        producers = {s.node for s in a.spaces.values()}
        for use in a.consumers:  # readers that are not producers themselves
            node = nodes[use.node]
            if use.node in producers:
                continue
            weight = get_attr_tensor(self.gm, node.args[1].target)
            total -= (weight.shape[1] - kept_slots(use.ids)) * (weight.numel() // weight.shape[1])
        sliced = set()  # a per-unit parameter shared by several uses is sliced once
        for param in a.channel_params:
            if param.target in sliced:
                continue
            sliced.add(param.target)
            tensor = get_attr_tensor(self.gm, param.target)
            per_slot = tensor.numel() // tensor.shape[param.dim]
            total -= (len(param.ids) - kept_slots(param.ids)) * per_slot
        return total

    def kept_units(self) -> dict[str, list[int]]:
        """Kept units per source module (row ranges of one weight merged: `weight_rows`)."""
        kept = {name: np.flatnonzero(mask).tolist() for name, mask in sorted(self.kept.items())}
        return merge_rows(*drop_repeated_uses(kept, self._space_sizes()))[0]

    def total_units(self) -> dict[str, int]:
        empty = {n: [] for n in self.spaces}
        return merge_rows(*drop_repeated_uses(empty, self._space_sizes()))[1]

    def _space_sizes(self) -> dict[str, int]:
        return {name: space.size for name, space in sorted(self.spaces.items())}

    # -- text -------------------------------------------------------------------------
    def text(self, source: bool = False) -> str:
        return ir_text(self, source)


def build_ir(
    gm: torch.fx.GraphModule,
    input_names: list[str],
    example_inputs: dict[str, torch.Tensor],
    outputs: list[int] | None = None,
    scope: list[str] | None = None,
) -> IR:
    """Wrap a traced graph: pick the task's output tensor, restrict it to `outputs`, analyse."""
    gm = copy.deepcopy(gm)
    select_task_output(gm, outputs)
    return IR(gm=gm, input_names=list(input_names), example_inputs=example_inputs, scope=scope)


def select_task_output(gm: torch.fx.GraphModule, outputs: list[int] | None) -> None:
    graph = gm.graph
    out_node = next(n for n in graph.nodes if n.op == "output")
    result = out_node.args[0]
    if isinstance(result, (tuple, list)):
        result = result[0]
    elif isinstance(result, dict):
        if "logits" not in result:
            raise LegocError(
                f"the model returns a dict without 'logits' (keys {sorted(result)}); "
                "name the task's output with --model-output KEY"
            )
        result = result["logits"]
    if not isinstance(result, torch.fx.Node):
        raise LegocError("the model's output is not a tensor computed from its inputs")
    if outputs is not None:
        with graph.inserting_before(out_node):
            result = graph.call_function(ops.select_outputs, (result, tuple(outputs)))
    out_node.args = (result,)
    graph.lint()
    gm.recompile()
