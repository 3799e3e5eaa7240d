"""Unit and dependency-group analysis of a traced graph.

A *unit* is one output feature of a Linear or one output channel of a Conv. The analysis follows
each unit's slot ("position") along the unit axis through the graph: element-wise and
per-channel ops carry it, flatten repeats it, concatenation shifts it, a residual sum or product
*couples* the units that meet in one slot (they must be removed together), and anything it does
not understand *freezes* the units it reads. Removed units are replaced by a constant, so every
op a removed unit passes through before it reaches a Linear/Conv (its *consumer*) must map
constants to constants: that is what makes ablations foldable into the consumer's bias.
"""

from __future__ import annotations

import fnmatch
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from legoc.ir import ops

Node = torch.fx.Node

LINEAR_OPS = {F.linear}
CONV_OPS = {F.conv1d: 1, F.conv2d: 2}
UNARY_FUNCS = {
    F.relu,
    torch.relu,
    F.gelu,
    F.silu,
    torch.tanh,
    F.tanh,
    torch.sigmoid,
    F.sigmoid,
    F.leaky_relu,
    F.elu,
    F.relu6,
    F.hardtanh,
    F.dropout,
    torch.nn.functional.hardswish,
}
UNARY_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "detach"}
POOL_FUNCS = {
    F.max_pool1d,
    F.max_pool2d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
}
UNARY_MODULES = (
    nn.ReLU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.ReLU6,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Identity,
)
POOL_MODULES = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
)
BINARY_FUNCS = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
}
BINARY_METHODS = {"add", "sub", "mul", "div"}
REDUCE_METHODS = {"mean", "sum", "amax", "amin"}
REDUCE_FUNCS = {torch.mean, torch.sum, torch.amax, torch.amin}


@dataclass(frozen=True)
class Layout:
    """Which unit sits in each slot along `axis` of a tensor (-1: not a unit)."""

    axis: int
    ids: np.ndarray


@dataclass(frozen=True)
class UnitSpace:
    """The units of one producer (a Linear or Conv), named by its module's qualified name."""

    name: str
    node: str
    kind: str  # linear | conv1d | conv2d
    size: int
    offset: int  # first global unit id
    weight: str  # get_attr target of the weight
    bias: str | None


@dataclass(frozen=True)
class ConsumerUse:
    """A Linear/Conv reading tracked units along its contracted axis."""

    node: str
    ids: np.ndarray


@dataclass(frozen=True)
class ChannelParam:
    """A per-unit parameter (e.g. a BatchNorm scale) to slice along `dim`."""

    target: str
    user: str
    dim: int
    ids: np.ndarray


@dataclass
class Group:
    """Units that must be removed together; `frozen` says why they cannot be removed at all."""

    index: int
    members: tuple[tuple[str, int], ...]
    frozen: str | None
    dead: bool
    params: int
    coupled_by: tuple[str, ...] = ()
    macs: int = 0  # multiply-accumulates per input row its units account for


@dataclass
class Analysis:
    spaces: dict[str, UnitSpace]
    layouts: dict[str, Layout]
    consumers: list[ConsumerUse]
    channel_params: list[ChannelParam]
    groups: list[Group]
    unit_group: np.ndarray  # global unit id -> group index
    reshapes: list[str] = field(default_factory=list)  # view/reshape nodes on unit paths
    splits: list[str] = field(default_factory=list)  # torch.split along a unit axis

    def space_of(self, unit_id: int) -> tuple[str, int]:
        for space in self.spaces.values():
            if space.offset <= unit_id < space.offset + space.size:
                return space.name, unit_id - space.offset
        raise KeyError(unit_id)


def shape_of(node: Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def producer_kind(gm: torch.fx.GraphModule, node: Node) -> str | None:
    """'linear'/'conv1d'/'conv2d' when `node` applies a parameter weight we can slice."""
    if node.op != "call_function" or len(node.args) < 2:
        return None
    weight = node.args[1]
    if not (isinstance(weight, Node) and weight.op == "get_attr"):
        return None
    if node.target in LINEAR_OPS:
        return "linear"
    if node.target in CONV_OPS and _conv_groups(node) == 1:
        return f"conv{CONV_OPS[node.target]}d"
    return None


def _conv_groups(node: Node) -> int:
    if len(node.args) > 6:
        return node.args[6]
    return node.kwargs.get("groups", 1)


def _bias_target(node: Node) -> str | None:
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    return bias.target if isinstance(bias, Node) and bias.op == "get_attr" else None


def module_name_of(weight_target: str) -> str:
    return weight_target.rsplit(".", 1)[0] if "." in weight_target else weight_target


class _Unions:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


class _Propagation:
    """One forward walk over the graph computing layouts, couplings and freezes."""

    def __init__(self, gm: torch.fx.GraphModule, scope: list[str] | None):
        self.gm = gm
        self.spaces: dict[str, UnitSpace] = {}
        offset = 0
        for node in gm.graph.nodes:
            kind = producer_kind(gm, node)
            if kind is None:
                continue
            weight_target = node.args[1].target
            name = module_name_of(weight_target)
            if name in self.spaces:  # a weight applied twice: treat the second use as plain op
                continue
            size = (
                gm.get_parameter(weight_target).shape[0]
                if _is_param(gm, weight_target)
                else (_get_attr(gm, weight_target).shape[0])
            )
            self.spaces[name] = UnitSpace(
                name, node.name, kind, size, offset, weight_target, _bias_target(node)
            )
            offset += size
        self.n_units = offset
        self.producer_of = {s.node: s for s in self.spaces.values()}
        self.unions = _Unions(offset)
        self.frozen: dict[int, str] = {}
        self.read = np.zeros(offset, dtype=bool)
        self.coupled: dict[int, set[str]] = {}
        self.layouts: dict[str, Layout] = {}
        self.consumers: list[ConsumerUse] = []
        self.channel_params: list[ChannelParam] = []
        self.reshapes: list[str] = []
        self.splits: list[str] = []
        self.split_parts: dict[str, tuple[int, list[np.ndarray]]] = {}  # split -> axis, parts
        self.input_dependent: set[str] = set()
        if scope is not None:
            for space in self.spaces.values():
                if not any(fnmatch.fnmatchcase(space.name, pattern) for pattern in scope):
                    for u in range(space.offset, space.offset + space.size):
                        self.frozen.setdefault(u, "outside scope")

    # -- helpers -----------------------------------------------------------------------
    def freeze(self, ids: np.ndarray, reason: str) -> None:
        for u in ids[ids >= 0]:
            self.frozen.setdefault(int(u), reason)
            self.read[u] = True

    def freeze_inputs(self, node: Node, reason: str) -> None:
        for arg in node.all_input_nodes:
            layout = self.layouts.get(arg.name)
            if layout is not None:
                self.freeze(layout.ids, reason)

    def couple(self, a: np.ndarray, b: np.ndarray, why: str) -> np.ndarray:
        out = a.copy()
        for i, (x, y) in enumerate(zip(a, b)):
            if x >= 0 and y >= 0 and x == y:
                continue  # a tensor combined with itself couples nothing
            if x >= 0 and y >= 0:
                self.unions.union(int(x), int(y))
                self.coupled.setdefault(int(x), set()).add(why)
                self.coupled.setdefault(int(y), set()).add(why)
            elif x >= 0 or y >= 0:
                self.freeze(np.array([max(x, y)]), f"{why} with a non-unit tensor")
                out[i] = -1
        return out

    # -- walk --------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            reads_values = not (
                node.op == "call_function" and node.target is ops.constant_channel_conv
            )
            if (
                node.op == "placeholder"
                or reads_values
                and any(a.name in self.input_dependent for a in node.all_input_nodes)
            ):
                self.input_dependent.add(node.name)
            if node.op in ("placeholder", "get_attr"):
                continue
            if node.op == "output":
                self.freeze_inputs(node, "reaches the model output")
                continue
            tracked = [a for a in node.all_input_nodes if a.name in self.layouts]
            layout = self.visit(node, tracked)
            if layout is not None and (layout.ids >= 0).any():
                self.layouts[node.name] = layout
                node.meta["legoc.layout"] = layout

    def visit(self, node: Node, tracked: list[Node]) -> Layout | None:
        space = self.producer_of.get(node.name)
        if space is not None or producer_kind(self.gm, node) is not None:
            self.visit_consumer(node, tracked)
            if space is None:
                return None
            ndim = len(shape_of(node))
            axis = ndim - 1 if space.kind == "linear" else 1
            return Layout(axis, np.arange(space.offset, space.offset + space.size))
        if node.target is operator.getitem and node.args[0].name in self.split_parts:
            axis, parts = self.split_parts[node.args[0].name]
            return Layout(axis, parts[node.args[1]])
        if not tracked:
            return None
        name = _op_name(node)
        x = node.args[0] if node.args else None
        in_layout = self.layouts.get(x.name) if isinstance(x, Node) else None
        kind = self.classify(node)
        if kind == "unary" and in_layout is not None and len(tracked) == 1:
            return in_layout
        if kind == "pool" and in_layout is not None and len(tracked) == 1:
            if in_layout.axis == 1 and len(shape_of(x)) >= 3:
                return Layout(1, in_layout.ids)
            self.freeze_inputs(node, f"pooled across units by {name}")
            return None
        if kind == "batch_norm" and in_layout is not None and len(tracked) == 1:
            if in_layout.axis != 1:
                self.freeze_inputs(node, "batch_norm over a non-channel axis")
                return None
            for arg in node.args[1:5]:
                if isinstance(arg, Node) and arg.op == "get_attr":
                    self.channel_params.append(
                        ChannelParam(arg.target, node.name, 0, in_layout.ids)
                    )
            return in_layout
        if kind == "binary":
            return self.visit_binary(node, name)
        if kind == "cat":
            return self.visit_cat(node)
        if kind == "reshape" and in_layout is not None and len(tracked) == 1:
            return self.visit_reshape(node, in_layout)
        if kind == "reduce" and in_layout is not None and len(tracked) == 1:
            return self.visit_reduce(node, in_layout)
        if kind == "permute" and in_layout is not None and len(tracked) == 1:
            return self.visit_permute(node, in_layout)
        if kind == "select_outputs" and in_layout is not None:
            if in_layout.axis != len(shape_of(x)) - 1:
                self.freeze_inputs(node, "outputs selected across another axis")
                return None
            return Layout(in_layout.axis, in_layout.ids[list(node.args[1])])
        if kind == "attention":
            return self.visit_attention(node)
        if kind == "split" and in_layout is not None and len(tracked) == 1:
            return self.visit_split(node, in_layout)
        if kind == "layer_norm":
            self.freeze_inputs(node, "a norm over the units couples all of them")
            return None
        if kind == "size":
            return None
        self.freeze_inputs(node, f"read by {name}, which legoc cannot slice through")
        return None

    def classify(self, node: Node) -> str | None:
        if node.op == "call_module":
            module = self.gm.get_submodule(node.target)
            if isinstance(module, UNARY_MODULES):
                return "unary"
            if isinstance(module, POOL_MODULES):
                return "pool"
            if isinstance(module, nn.Flatten):
                return "reshape"
            return None
        if node.op == "call_method":
            if node.target in UNARY_METHODS:
                return "unary"
            if node.target in BINARY_METHODS:
                return "binary"
            if node.target in ("view", "reshape", "flatten"):
                return "reshape"
            if node.target in REDUCE_METHODS:
                return "reduce"
            if node.target in ("permute", "transpose"):
                return "permute"
            if node.target in ("size", "dim"):
                return "size"
            return None
        target = node.target
        if target in UNARY_FUNCS:
            return "unary"
        if target in POOL_FUNCS:
            return "pool"
        if target is F.batch_norm:
            return "batch_norm"
        if target in (F.layer_norm, F.group_norm):
            return "layer_norm"
        if target in BINARY_FUNCS:
            return "binary"
        if target is torch.cat:
            return "cat"
        if target in (torch.flatten, torch.reshape):
            return "reshape"
        if target in REDUCE_FUNCS:
            return "reduce"
        if target in (torch.permute, torch.transpose):
            return "permute"
        if target is ops.select_outputs:
            return "select_outputs"
        if target is F.scaled_dot_product_attention:
            return "attention"
        if target is torch.split:
            return "split"
        if target is torch.pow and isinstance(node.args[1], (int, float)):
            return "unary"  # an element-wise power maps constants to constants
        if target is getattr:
            return "size" if node.args[1] in ("shape", "dtype", "device", "ndim") else None
        if target is ops.constant_channel_conv:
            return "size"  # reads only the shape of its input
        return None

    def visit_consumer(self, node: Node, tracked: list[Node]) -> None:
        x = node.args[0]
        layout = self.layouts.get(x.name) if isinstance(x, Node) else None
        others = [a for a in tracked if a is not x]
        for other in others:  # units flowing into weights or biases: not sliceable
            self.freeze(self.layouts[other.name].ids, f"used as a weight by {node.name}")
        if layout is None:
            return
        contracted = len(shape_of(x)) - 1 if node.target in LINEAR_OPS else 1
        if layout.axis != contracted:
            self.freeze(layout.ids, f"read by {node.name} along a non-contracted axis")
            return
        self.read[layout.ids[layout.ids >= 0]] = True
        self.consumers.append(ConsumerUse(node.name, layout.ids))

    def visit_binary(self, node: Node, name: str) -> Layout | None:
        a, b = (node.args + (node.kwargs.get("other"),))[:2]
        la = self.layouts.get(a.name) if isinstance(a, Node) else None
        lb = self.layouts.get(b.name) if isinstance(b, Node) else None
        out_shape = shape_of(node)
        if la is not None and lb is not None:
            if la.axis != lb.axis or len(la.ids) != len(lb.ids) or shape_of(a) != shape_of(b):
                self.freeze_inputs(node, f"{name} of misaligned unit tensors")
                return None
            return Layout(la.axis, self.couple(la.ids, lb.ids, name))
        layout, tracked_arg, other = (la, a, b) if la is not None else (lb, b, a)
        if not isinstance(other, Node):
            return layout  # a Python scalar keeps constants constant
        if other.op == "call_function" and other.target is ops.constant_channel_conv:
            kernel = other.args[1]  # its output channels are the units: slice them together
            self.channel_params.append(ChannelParam(kernel.target, other.name, 0, layout.ids))
            return layout
        if other.name in self.input_dependent:
            self.freeze(layout.ids, f"{name} with an input-dependent tensor")
            return None
        other_shape = shape_of(other) or ()
        ndim = len(out_shape)
        dim = layout.axis - (ndim - len(other_shape))
        if shape_of(tracked_arg) != out_shape:
            self.freeze(layout.ids, f"{name} broadcasts the units")
            return None
        if 0 <= dim < len(other_shape) and other_shape[dim] != 1:
            if other.op != "get_attr":
                self.freeze(layout.ids, f"{name} with a computed per-unit constant")
                return None
            self.channel_params.append(ChannelParam(other.target, node.name, dim, layout.ids))
        return layout

    def visit_cat(self, node: Node) -> Layout | None:
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        ndim = len(shape_of(node))
        dim = dim % ndim
        layouts = [self.layouts.get(t.name) for t in tensors]
        axis = {lay.axis for lay in layouts if lay is not None}
        if len(axis) != 1 or next(iter(axis)) != dim:
            self.freeze_inputs(node, "concatenated along another axis")
            return None
        parts = []
        for tensor, lay in zip(tensors, layouts):
            parts.append(lay.ids if lay is not None else np.full(shape_of(tensor)[dim], -1))
        return Layout(dim, np.concatenate(parts))

    def visit_reshape(self, node: Node, layout: Layout) -> Layout | None:
        in_shape, out_shape = shape_of(node.args[0]), shape_of(node)
        axis = layout.axis
        if out_shape[:axis] == in_shape[:axis]:
            inner = int(np.prod(in_shape[axis + 1 :], dtype=np.int64))
            if len(out_shape) > axis and out_shape[axis] == in_shape[axis] * inner:
                if inner > 1 or len(out_shape) != len(in_shape):
                    self.reshapes.append(node.name)
                return Layout(axis, np.repeat(layout.ids, inner))
            if len(out_shape) > axis and out_shape[axis] == in_shape[axis]:
                self.reshapes.append(node.name)
                return layout
            if _splits_axis(in_shape, out_shape, axis):  # channels -> (heads, head_dim)
                blocks = layout.ids.reshape(out_shape[axis], out_shape[axis + 1])
                for block in blocks:
                    self.couple(np.full_like(block, block[0]), block, "attention head")
                self.reshapes.append(node.name)
                return Layout(axis, blocks[:, 0].copy())
        self.freeze(layout.ids, "reshaped across the unit axis")
        return None

    def visit_attention(self, node: Node) -> Layout | None:
        """Scaled dot-product attention over (batch, heads, tokens, head_dim): a head's query,
        key and value channels are one unit. Removed together, they are constants: the scores
        of every query shift by one constant (softmax ignores it) and the head outputs its
        value constant, which folds into the output projection's bias."""
        q, k, v = node.args[:3]
        layouts = [self.layouts.get(t.name) if isinstance(t, Node) else None for t in (q, k, v)]
        head_axis = len(shape_of(q)) - 3
        extra = [a for a in node.all_input_nodes if a not in (q, k, v) and a.name in self.layouts]
        whole_heads = all(
            lay is not None and lay.axis == head_axis and len(lay.ids) == len(layouts[0].ids)
            for lay in layouts
        )
        if extra or not whole_heads:
            self.freeze_inputs(node, "attention over units that are not whole heads")
            return None
        ids = self.couple(layouts[0].ids, layouts[1].ids, "attention head")
        ids = self.couple(ids, layouts[2].ids, "attention head")
        return Layout(head_axis, ids)

    def visit_split(self, node: Node, layout: Layout) -> None:
        """Each part of a split along the unit axis gets its slice of the units (its getitem
        reads them); a split along another axis hands every part the same units."""
        size = node.args[1]
        dim = (node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)) % len(
            shape_of(node.args[0])
        )
        length = shape_of(node.args[0])[dim]
        sizes = list(size) if isinstance(size, (list, tuple)) else [size] * -(-length // size)
        if dim != layout.axis:
            self.split_parts[node.name] = (layout.axis, [layout.ids] * len(sizes))
            return None
        bounds = np.cumsum([0, *sizes])
        self.split_parts[node.name] = (
            layout.axis,
            [layout.ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
        )
        self.splits.append(node.name)
        return None

    def visit_reduce(self, node: Node, layout: Layout) -> Layout | None:
        in_shape = shape_of(node.args[0])
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if dims is None:
            self.freeze(layout.ids, "reduced over all axes")
            return None
        dims = {d % len(in_shape) for d in (dims if isinstance(dims, (tuple, list)) else [dims])}
        if layout.axis in dims:
            self.freeze(layout.ids, "reduced over the unit axis")
            return None
        axis = layout.axis if keepdim else layout.axis - sum(d < layout.axis for d in dims)
        return Layout(axis, layout.ids)

    def visit_permute(self, node: Node, layout: Layout) -> Layout | None:
        ndim = len(shape_of(node.args[0]))
        rest = list(node.args[1:])
        if node.target in ("transpose", torch.transpose):
            a, b = (d % ndim for d in rest[:2])
            perm = list(range(ndim))
            perm[a], perm[b] = perm[b], perm[a]
        else:
            perm = [
                d % ndim
                for d in (
                    rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
                )
            ]
        return Layout(perm.index(layout.axis), layout.ids)


def _splits_axis(in_shape, out_shape, axis: int) -> bool:
    """True when a reshape splits dim `axis` in two and leaves every other dim as it was."""
    return (
        len(out_shape) == len(in_shape) + 1
        and out_shape[:axis] == in_shape[:axis]
        and out_shape[axis] * out_shape[axis + 1] == in_shape[axis]
        and out_shape[axis + 2 :] == in_shape[axis + 1 :]
        and out_shape[axis] > 1
    )


def _op_name(node: Node) -> str:
    if node.op == "call_module":
        return node.target
    if node.op == "call_method":
        return f".{node.target}()"
    return getattr(node.target, "__name__", str(node.target))


def _is_param(gm: torch.nn.Module, target: str) -> bool:
    try:
        gm.get_parameter(target)
        return True
    except AttributeError:
        return False


def _get_attr(gm: torch.nn.Module, target: str) -> torch.Tensor:
    module_path, _, attr = target.rpartition(".")
    owner = gm.get_submodule(module_path) if module_path else gm
    return getattr(owner, attr)


def get_attr_tensor(gm: torch.nn.Module, target: str) -> torch.Tensor:
    return _get_attr(gm, target)


def analyze(gm: torch.fx.GraphModule, scope: list[str] | None = None) -> Analysis:
    """Find unit spaces, their layouts, consumers and dependency groups (needs tensor_meta)."""
    walk = _Propagation(gm, scope)
    walk.run()
    n = walk.n_units
    roots = np.array([walk.unions.find(u) for u in range(n)], dtype=np.int64)
    unit_params = _unit_params(gm, walk)
    unit_macs = _unit_params(gm, walk, per_position=True)
    groups: list[Group] = []
    unit_group = np.full(n, -1, dtype=np.int64)
    by_root: dict[int, list[int]] = {}
    for u in range(n):
        by_root.setdefault(int(roots[u]), []).append(u)
    spaces = list(walk.spaces.values())
    for root in sorted(by_root):
        units = by_root[root]
        members = []
        for u in units:
            space = next(s for s in spaces if s.offset <= u < s.offset + s.size)
            members.append((space.name, u - space.offset))
        reasons = sorted({walk.frozen[u] for u in units if u in walk.frozen})
        coupled = sorted(set().union(*(walk.coupled.get(u, set()) for u in units)))
        group = Group(
            index=len(groups),
            members=tuple(members),
            frozen=reasons[0] if reasons else None,
            dead=not reasons and not walk.read[units].any(),
            params=int(sum(unit_params[u] for u in units)),
            coupled_by=tuple(coupled),
            macs=int(sum(unit_macs[u] for u in units)),
        )
        unit_group[units] = group.index
        groups.append(group)
    return Analysis(
        walk.spaces,
        walk.layouts,
        walk.consumers,
        walk.channel_params,
        groups,
        unit_group,
        walk.reshapes,
        walk.splits,
    )


def output_positions(node: Node) -> int:
    """Output positions per row of a Linear/Conv (tokens, pixels): each weight element is
    multiply-accumulated this many times for one input row."""
    shape = shape_of(node)
    if shape is None:
        return 1
    channel = len(shape) - 1 if node.target in LINEAR_OPS else 1
    return int(np.prod([d for i, d in enumerate(shape) if i not in (0, channel)], dtype=np.int64))


def _unit_params(
    gm: torch.fx.GraphModule, walk: _Propagation, per_position: bool = False
) -> np.ndarray:
    """Parameters each unit accounts for: weight row, bias, per-unit params, reader columns.
    `per_position`: multiply-accumulates per input row instead (weights only)."""
    counts = np.zeros(walk.n_units, dtype=np.int64)
    nodes = {n.name: n for n in gm.graph.nodes}
    for space in walk.spaces.values():
        weight = _get_attr(gm, space.weight)
        per_row = weight.numel() // max(weight.shape[0], 1)
        if per_position:
            per_row *= output_positions(nodes[space.node])
        elif space.bias:
            per_row += 1
        counts[space.offset : space.offset + space.size] += per_row
    for use in walk.consumers:
        weight = _get_attr(gm, nodes[use.node].args[1].target)
        per_column = weight.numel() // weight.shape[1]
        if per_position:
            per_column *= output_positions(nodes[use.node])
        np.add.at(counts, use.ids[use.ids >= 0], per_column)
    if per_position:
        return counts
    for param in walk.channel_params:
        tensor = _get_attr(gm, param.target)
        per_slot = tensor.numel() // tensor.shape[param.dim]
        np.add.at(counts, param.ids[param.ids >= 0], per_slot)
    return counts
