"""`align-channels`: pad sliced conv channels with exact zero channels up to a multiple of 16.

onnxruntime's CPU convolutions switch to their blocked (NCHWc) kernels only when channel
counts are multiples of the vector block (16 floats on AVX-512, 8 on AVX2); a rationale's
odd counts (26, 41, 29, ...) fall back to im2col and ran *slower per MAC* than the full model
(a 0.37x-MAC block took 0.95x the full model's time). Padding costs a few zero MACs and buys the
fast path back.

Padding is exact: a padded channel's producer row and bias are zero, its per-channel parameters
neutral and every reader's columns for it zero, so no output changes. One padded channel per
family also replaces the border-correction maps that `fold-ablations` adds after zero-padded
convs (`ops.constant_channel_conv`): made a constant 1 inside the image, it is the ones channel
that the correction convolves, so the reader's own weights carry the correction and the extra
Conv/Add ops (which also break onnxruntime's NCHWc chains) disappear.

Each change is checked on the example rows and undone when it is not exact (a family that
reaches the outputs, a reshape with literal sizes, a reader that is not a Conv or a flattened
Linear): the pass never changes what the block computes.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx

from legoc.ir import ops
from legoc.ir.analysis import Analysis, analyze, get_attr_tensor
from legoc.ir.core import IR
from legoc.passes.base import PassContext, PassResult
from legoc.passes.rewrite.fold_ablations import FOLDED, first_arguments
from legoc.passes.rewrite.graph_edit import clone_ir, nodes_by_name, set_tensor

DEFAULT_MULTIPLE = 16  # AVX-512 NCHWc block; also a multiple of the AVX2 block (8)
EXACT_TOLERANCE = 1e-5  # relative to the outputs' magnitude
ONES_MIN = 1e-3  # the ones channel must carry a usable, uniform value


@dataclass(frozen=True)
class AlignChannels:
    """The context's `source_sizes` (space -> units in the source model) caps the padding: a
    layer is never made wider than it was, and one whose source width is not a multiple is
    left alone (the source model ran without the fast kernels there too)."""

    multiple: int = DEFAULT_MULTIPLE
    name = "align-channels"
    kind = "rewrite"

    def run(self, ir: IR, ctx: PassContext | None = None) -> PassResult:
        source_sizes = ctx.source_sizes if ctx is not None else None
        stats = {
            "channels_added": 0,
            "families_padded": 0,
            "families_skipped": 0,
            "border_maps_folded": 0,
        }
        out = clone_ir(ir)
        if self.multiple <= 1:
            return PassResult(out, stats, changed=False)
        reference = _outputs(out)
        padded: dict[str, tuple[int, int]] = {}
        for family in _families(analyze(out.gm)):
            trial = clone_ir(out)
            analysis = analyze(trial.gm)
            size = analysis.spaces[family[0]].size
            target = -(-size // self.multiple) * self.multiple
            limit = min((source_sizes or {}).get(name, target) for name in family)
            if (
                target == size
                or target > limit
                or not _pad_family(trial.gm, analysis, family, target)
            ):
                continue
            if _exact(trial, reference):
                out = trial
                stats["channels_added"] += (target - size) * len(family)
                stats["families_padded"] += 1
                padded.update({name: (size, target) for name in family})
            else:
                stats["families_skipped"] += 1
        trial = clone_ir(out)
        folded = _fold_border_maps(trial, padded)
        if folded and _exact(trial, reference):
            out = trial
            stats["border_maps_folded"] = folded
        out.gm.graph.eliminate_dead_code()
        out.gm.recompile()
        out.refresh()
        changed = bool(stats["channels_added"] or stats["border_maps_folded"])
        return PassResult(out, stats, changed=changed)


def _outputs(ir: IR) -> list[torch.Tensor]:
    with torch.no_grad():
        result = ir.gm(*[ir.example_inputs[name] for name in ir.input_names])
    return [t for t in torch.utils._pytree.tree_leaves(result) if isinstance(t, torch.Tensor)]


def _exact(ir: IR, reference: list[torch.Tensor]) -> bool:
    try:
        ir.gm.recompile()
        ir.refresh()
        got = _outputs(ir)
    except Exception:  # any failure means "not exact": keep the unpadded graph
        return False
    if len(got) != len(reference):
        return False
    for a, b in zip(got, reference):
        if a.shape != b.shape:
            return False
        if float((a - b).abs().max()) > EXACT_TOLERANCE * (1 + float(b.abs().max())):
            return False
    return True


def _families(analysis: Analysis) -> list[list[str]]:
    """Conv2d spaces whose units are coupled (e.g. both sides of a residual sum), in order."""
    parent = {name: name for name in analysis.spaces}

    def find(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    for group in analysis.groups:
        spaces = sorted({space for space, _ in group.members})
        for other in spaces[1:]:
            parent[find(other)] = find(spaces[0])
    families: dict[str, list[str]] = {}
    for name in analysis.spaces:
        families.setdefault(find(name), []).append(name)
    return [
        members
        for members in families.values()
        if all(analysis.spaces[m].kind == "conv2d" for m in members)
        and len({analysis.spaces[m].size for m in members}) == 1
    ]


def _unit_index(analysis: Analysis, ids: np.ndarray, family: list[str]) -> np.ndarray | None:
    """Each slot's unit index within its family's space, or None if a slot is something else."""
    index = np.full(len(ids), -1, dtype=np.int64)
    for name in family:
        space = analysis.spaces[name]
        inside = (ids >= space.offset) & (ids < space.offset + space.size)
        index[inside] = ids[inside] - space.offset
    return None if (index < 0).any() else index


def _block_length(index: np.ndarray, size: int) -> int | None:
    """L when the slots are units 0..size-1 in order, each repeated L times contiguously
    (a Conv reads L=1; a Linear after flattening C x H x W reads L=H*W)."""
    if len(index) % size:
        return None
    length = len(index) // size
    return length if np.array_equal(index, np.repeat(np.arange(size), length)) else None


def _pad(tensor: torch.Tensor, dim: int, count: int, value: float = 0.0) -> torch.Tensor:
    shape = list(tensor.shape)
    shape[dim] = count
    return torch.cat([tensor.detach(), tensor.new_full(shape, value)], dim=dim)


def _pad_family(
    gm: torch.fx.GraphModule, analysis: Analysis, family: list[str], target: int
) -> bool:
    """Append zero channels to every producer in `family` and zero columns to its readers.
    False (graph untouched) when some reader cannot be padded."""
    size = analysis.spaces[family[0]].size
    extra = target - size
    ids = np.concatenate(
        [np.arange(s.offset, s.offset + s.size) for s in (analysis.spaces[m] for m in family)]
    )
    edits = []
    for use in analysis.consumers:
        if not np.isin(use.ids, ids).any():
            continue
        index = _unit_index(analysis, use.ids, family)
        length = None if index is None else _block_length(index, size)
        if length is None:
            return False
        edits.append(("columns", use.node, length))
    for param in analysis.channel_params:
        if not np.isin(param.ids, ids).any():
            continue
        index = _unit_index(analysis, param.ids, family)
        if index is None or _block_length(index, size) != 1:
            return False
        edits.append(("param", param, None))
    nodes = nodes_by_name(gm)
    for name in [*analysis.reshapes, *analysis.splits]:
        layout = analysis.layouts.get(name)
        if layout is None or not np.isin(layout.ids, ids).any() or _is_flatten(nodes[name]):
            continue
        return False  # literal sizes or a split along the channels: not padded
    for name in family:  # producer rows and bias (fold-ablations' maps and kernels are
        # per-channel params of the analysis, padded below)
        node = nodes[analysis.spaces[name].node]
        set_tensor(gm, node.args[1], _pad(get_attr_tensor(gm, node.args[1].target), 0, extra))
        bias = node.args[2] if len(node.args) > 2 else None
        if isinstance(bias, torch.fx.Node):
            set_tensor(gm, bias, _pad(get_attr_tensor(gm, bias.target), 0, extra))
    for kind, what, length in edits:
        if kind == "columns":
            weight_node = nodes[what].args[1]
            weight = get_attr_tensor(gm, weight_node.target)
            set_tensor(gm, weight_node, _pad(weight, 1, extra * length))
        else:
            neutral = 1.0 if what.target.endswith("running_var") else 0.0
            for attr in nodes[what.user].all_input_nodes:
                if attr.op == "get_attr" and attr.target == what.target:
                    tensor = get_attr_tensor(gm, attr.target)
                    set_tensor(gm, attr, _pad(tensor, what.dim, extra, neutral))
    return True


def _is_flatten(node: torch.fx.Node) -> bool:
    """Flattening keeps each channel's positions contiguous (checked by `_block_length`) and
    carries no literal channel count."""
    if node.op == "call_module":
        return isinstance(node.graph.owning_module.get_submodule(node.target), torch.nn.Flatten)
    return node.target in (torch.flatten, "flatten")


def _fold_border_maps(ir: IR, padded: dict[str, tuple[int, int]]) -> int:
    """Turn one padded channel per family into a constant-1 channel and move each border
    correction (`x + constant_channel_conv(x_in, kernel)`) into the reader's weights."""
    gm = ir.gm
    analysis = analyze(gm)
    families = [f for f in _families(analysis) if f[0] in padded]
    nodes = nodes_by_name(gm)
    terms = [
        (add, add.args[0], add.args[1])
        for add in gm.graph.nodes
        if add.target is operator.add
        and add.meta.get(FOLDED)
        and isinstance(add.args[1], torch.fx.Node)
        and add.args[1].target is ops.constant_channel_conv
    ]
    if not terms:
        return 0
    slot_of_family = {}
    for family in families:  # the first padded channel of the first producer with a bias
        size, _ = padded[family[0]]
        for name in family:
            bias = nodes[analysis.spaces[name].node].args[2]
            if isinstance(bias, torch.fx.Node):
                values = get_attr_tensor(gm, bias.target).detach().clone()
                values[size] = 1.0
                set_tensor(gm, bias, values)
                slot_of_family.update({m: size for m in family})
                break
    rows = [ir.example_inputs[name] for name in ir.input_names]
    inputs = first_arguments(gm, rows, {reader.name for _, reader, _ in terms})
    folded = 0
    for add, reader, term in terms:
        use = next((u for u in analysis.consumers if u.node == reader.name), None)
        if use is None:
            continue
        name = next((n for n in slot_of_family if _in_space(analysis, use.ids, n)), None)
        if name is None:
            continue
        slot = slot_of_family[name]
        value = inputs[reader.name][:, slot]
        ones = float(value.flatten()[0])
        if abs(ones) < ONES_MIN or float((value - ones).abs().max()) > 1e-6 * abs(ones):
            continue
        weight = get_attr_tensor(gm, reader.args[1].target).detach().clone()
        kernel = get_attr_tensor(gm, term.args[1].target).detach()
        weight[:, slot] = kernel[:, 0] / ones
        set_tensor(gm, reader.args[1], weight)
        add.replace_all_uses_with(reader)
        gm.graph.erase_node(add)
        gm.graph.erase_node(term)
        folded += 1
    return folded


def _in_space(analysis: Analysis, ids: np.ndarray, name: str) -> bool:
    space = analysis.spaces[name]
    return bool(((ids >= space.offset) & (ids < space.offset + space.size)).any())
