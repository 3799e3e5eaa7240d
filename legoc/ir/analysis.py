"""Unit and dependency-group analysis of a traced graph.

A *unit* is one output feature of a Linear or one output channel of a Conv. The analysis follows
each unit's slot ("position") along the unit axis through the graph: element-wise and
per-channel ops carry it, flatten repeats it, concatenation shifts it, a residual sum or product
*couples* the units that meet in one slot (they must be removed together), and anything it does
not understand *freezes* the units it reads. Removed units are replaced by a constant, so every
op a removed unit passes through before it reaches a Linear/Conv (its *consumer*) must map
constants to constants: that is what makes ablations foldable into the consumer's bias.

This module holds the walk and its state; what each op does to units is its kind's handler
(`legoc.ir.handlers`), and which ops are of which kind is `legoc.ir.vocabulary`.
"""

from __future__ import annotations

import fnmatch

import numpy as np
import torch
import torch.fx

from legoc.ir import ops
from legoc.ir.cost import output_positions, unit_costs
from legoc.ir.graph import get_attr_tensor, is_param, module_name_of, op_name, shape_of
from legoc.ir.handlers import HANDLERS, SOURCES, norm, unsupported, weighted
from legoc.ir.handlers.attention_scores import Scores, score_op
from legoc.ir.units import (
    Analysis,
    ChannelParam,
    ChannelPermutation,
    ConsumerUse,
    Group,
    Layout,
    SharedKV,
    UnitSpace,
)
from legoc.ir.vocabulary import (
    CONV_OPS,
    LINEAR_OPS,
    bias_target,
    classify,
    conv_groups,
    producer_kind,
    producer_weight,
)
from legoc.ir.weight_uses import first_use_of, use_space

# names other stages import from here
__all__ = [
    "CONV_OPS",
    "LINEAR_OPS",
    "Analysis",
    "ChannelParam",
    "ConsumerUse",
    "Group",
    "Layout",
    "Propagation",
    "UnitSpace",
    "analyze",
    "get_attr_tensor",
    "module_name_of",
    "output_positions",
    "producer_kind",
    "shape_of",
]

Node = torch.fx.Node


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


class Propagation:
    """One forward walk over the graph computing layouts, couplings and freezes; the state
    the op handlers read and record into."""

    def __init__(
        self,
        gm: torch.fx.GraphModule,
        scope: list[str] | None,
        plain_attention: frozenset[str] = frozenset(),
        restated: frozenset[str] = frozenset(),
        plain_embeddings: frozenset[str] = frozenset(),
    ):
        self.gm = gm
        self.nodes = {n.name: n for n in gm.graph.nodes}
        # GQA attention nodes whose query heads could not be proven units of their own: one
        # unit per KV head and its query heads there (handlers/shared_kv)
        self.plain_attention = plain_attention
        self.sites: dict[str, tuple[str, str]] = {}  # query space -> (its site, attention)
        self.shared_kv: list[SharedKV] = []
        self.spaces: dict[str, UnitSpace] = {}
        self.weight_uses = _weight_uses(gm)
        # weight -> the Linear nodes applying it, when it is applied several times and nothing
        # else reads it: each use is a space of its own, coupled unit by unit (weight_uses)
        self.applied = _applications(gm, self.weight_uses)
        self.reapplied: set[str] = set()  # nodes applying a weight an earlier node applied
        # norms whose output is a unit space of its own (handlers/norm.restate), and those a
        # walk found it would restate rather than freeze (analyze runs again with them)
        self.restated: set[str] = set()
        self.restate_wanted: set[str] = set()
        # embedding nodes found to be per-head attention biases (T5's relative position bias):
        # the analysis runs again with them as lookups, sliced with the heads (head_bias)
        self.bias_embeddings: set[str] = set()
        offset = 0
        for node in gm.graph.nodes:
            if (node.name in restated or node.target is ops.carried_norm) and norm.restatable(
                gm, node, self.weight_uses
            ):
                space = norm.restated_space(node, offset)
                if space.name not in self.spaces:
                    self.spaces[space.name] = space
                    self.restated.add(node.name)
                    offset += space.size
                continue
            kind = producer_kind(gm, node)
            if kind is None or (kind == "embedding" and node.name in plain_embeddings):
                continue
            weight_target = producer_weight(node).target
            name = module_name_of(weight_target)
            uses = self.applied.get(weight_target, [node.name])
            if uses.index(node.name):
                name = use_space(name, uses.index(node.name))
                self.reapplied.add(node.name)
            elif name in self.spaces:  # a weight applied twice: its units are frozen (below)
                continue
            size = (
                gm.get_parameter(weight_target)
                if is_param(gm, weight_target)
                else get_attr_tensor(gm, weight_target)
            ).shape[1 if kind == "embedding" else 0]
            groups = conv_groups(node) if kind.startswith("grouped_") else 1
            self.spaces[name] = UnitSpace(
                name, node.name, kind, size, offset, weight_target, bias_target(node), groups
            )
            offset += size
        self.n_units = offset
        self.producer_of = {s.node: s for s in self.spaces.values()}
        self.unions = _Unions(offset)
        self.frozen: dict[int, str] = {}
        self.frozen_at: dict[int, str] = {}  # unit -> the op and node that froze it
        self.current: Node | None = None  # the node being visited (what a freeze names)
        self.read = np.zeros(offset, dtype=bool)
        self.coupled: dict[int, set[str]] = {}
        self.layouts: dict[str, Layout] = {}
        self.consumers: list[ConsumerUse] = []
        self.channel_params: list[ChannelParam] = []
        self.reshapes: list[str] = []
        self.splits: list[str] = []
        self.split_parts: dict[str, tuple[int, list[np.ndarray]]] = {}  # split -> axis, parts
        self.input_dependent: set[str] = set()
        self.permutations: list[ChannelPermutation] = []
        self.forwarded: dict[str, Layout] = {}  # a layout decided ahead (end of a shuffle)
        self.scores: dict[str, Scores] = {}  # attention scores: their heads (attention_scores)
        self.normed: dict[str, str] = {}  # node -> the norm over units whose output it carries
        self.norm_readers: dict[str, str] = {}  # Linear/Conv node -> the norm it reads
        # node -> (its weights, the axes summed so far) on the way to a weighted mean
        self.weighted: dict[str, tuple[str, frozenset[int] | None]] = {}
        for space in self.spaces.values():
            shared = self.shared_uses(space.weight)
            if shared:  # one row serves every use: it cannot be sliced for one of them
                self.freeze(np.arange(space.offset, space.offset + space.size), shared)
            first = first_use_of(space.name)
            if first is not None:  # row i of every use is one row of the weight
                ids = np.arange(space.size)
                why = f"weight {space.weight} applied {len(self.applied[space.weight])} times"
                self.couple(self.spaces[first].offset + ids, space.offset + ids, why)
        if scope is not None:
            for space in self.spaces.values():
                module = first_use_of(space.name) or space.name
                if not any(fnmatch.fnmatchcase(module, pattern) for pattern in scope):
                    for u in range(space.offset, space.offset + space.size):
                        self.frozen.setdefault(u, "outside scope")

    def shared_uses(self, weight: str) -> str | None:
        """Why `weight` cannot be sliced for one use: it is used by several nodes (unless they
        all apply it as Linear layers: then its uses are coupled, `couple_reapplied`)."""
        users = self.weight_uses.get(id(get_attr_tensor(self.gm, weight)), [])
        if len(users) < 2 or weight in self.applied:
            return None
        return f"weight {weight} is used {len(users)} times ({', '.join(users)})"

    # -- what handlers record ------------------------------------------------------------
    def freeze(self, ids: np.ndarray, reason: str) -> None:
        at = (
            None if self.current is None else f"{op_name(self.current)} at node {self.current.name}"
        )
        for u in ids[ids >= 0]:
            if int(u) not in self.frozen:
                self.frozen[int(u)] = reason
                if at is not None:
                    self.frozen_at[int(u)] = at
            self.read[u] = True

    def freeze_inputs(self, node: Node, reason: str) -> None:
        for arg in node.all_input_nodes:
            layout = self.layouts.get(arg.name)
            if layout is not None:
                self.freeze(layout.ids, reason)

    def cannot_slice(self, node: Node) -> None:
        """Freeze what `node` reads: legoc does not follow units through it."""
        self.freeze_inputs(node, f"read by {op_name(node)}, which legoc cannot slice through")
        return None

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

    # -- what handlers read --------------------------------------------------------------
    def first_layout(self, node: Node) -> Layout | None:
        """The layout of `node`'s first argument, if it carries units."""
        x = node.args[0] if node.args else None
        return self.layouts.get(x.name) if isinstance(x, Node) else None

    def sole_layout(self, node: Node, tracked: list[Node]) -> Layout | None:
        """The first argument's layout when it is the only input that carries units."""
        return self.first_layout(node) if len(tracked) == 1 else None

    # -- walk --------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            self.current = node
            reads_values = not (
                node.op == "call_function"
                and node.target in (ops.constant_channel_conv, ops.token_constant)
            ) and not reads_only_shape(node)
            if node.op == "placeholder" or (
                reads_values and any(a.name in self.input_dependent for a in node.all_input_nodes)
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
        self.current = None
        self.couple_reapplied()
        for name in self.restated - set(self.layouts):  # the walk did not restate it after all
            space = self.producer_of[name]
            own = np.arange(space.offset, space.offset + space.size)
            self.freeze(own, f"norm {name} restates no units of its input")
            self.layouts[name] = Layout(len(shape_of(self.nodes[name])) - 1, own)

    def couple_reapplied(self) -> None:
        """A weight applied several times is sliced once for all its uses: the units its uses
        read in one column are coupled (one read at some uses only is frozen), and so are the
        units one shared per-unit parameter (a norm's scale) serves at each use."""
        reads = {use.node: use.ids for use in self.consumers}
        for weight, nodes in self.applied.items():
            why = f"weight {weight} applied {len(nodes)} times"
            if any(n in self.norm_readers for n in nodes):  # carriers are built per reader
                for n in (n for n in nodes if n in reads):
                    self.freeze(reads[n], f"read through a norm by {n}: {why}")
                continue
            columns = [reads.get(n) for n in nodes]
            width = next((len(c) for c in columns if c is not None), 0)
            if not width:
                continue
            columns = [np.full(width, -1) if c is None else c for c in columns]
            for other in columns[1:]:
                self.couple(columns[0], other, why)
        by_target: dict[str, list[ChannelParam]] = {}
        for param in self.channel_params:
            by_target.setdefault(param.target, []).append(param)
        for target, params in by_target.items():
            if len({p.user for p in params}) < 2:
                continue
            users = self.weight_uses.get(id(get_attr_tensor(self.gm, target)), [])
            why = f"parameter {target} is used {len(users)} times"
            shapes = {(p.dim, len(p.ids)) for p in params}
            if set(users) != {p.user for p in params} or len(shapes) > 1:
                for param in params:
                    self.freeze(param.ids, f"{why}, not all along the same units")
                continue
            for param in params[1:]:
                self.couple(params[0].ids, param.ids, why)

    def visit(self, node: Node, tracked: list[Node]) -> Layout | None:
        if node.name in self.forwarded:
            return self.forwarded.pop(node.name)
        if self.scores and any(a.name in self.scores for a in node.all_input_nodes):
            return score_op(self, node, tracked)
        kind = classify(self.gm, node)
        if not tracked and kind not in SOURCES:
            return None
        layout = HANDLERS.get(kind, unsupported)(self, node, tracked)
        if self.weighted:
            pending = [a for a in tracked if a.name in self.weighted]
            if pending:
                layout = weighted.follow(self, node, pending, layout)
        normed = [a for a in tracked if a.name in self.normed]
        return norm.follow(self, node, kind, normed, layout) if normed else layout


def _weight_uses(gm: torch.fx.GraphModule) -> dict[int, list[str]]:
    """id of a tensor -> the nodes that read it, as a get_attr's users or inside a module's
    forward: a shared layer or a tied embedding (one tensor, two names) has several."""
    uses: dict[int, list[str]] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            tensor = get_attr_tensor(gm, node.target)
            uses.setdefault(id(tensor), []).extend(user.name for user in node.users)
        elif node.op == "call_module":
            for tensor in gm.get_submodule(node.target).parameters():
                uses.setdefault(id(tensor), []).append(node.name)
    return uses


def _bias_arg(node: Node):
    return node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")


def _applications(gm: torch.fx.GraphModule, uses: dict[int, list[str]]) -> dict[str, list[str]]:
    """Weight -> the Linear nodes applying it (graph order), for each weight applied by several
    Linear nodes, all with the same bias, and read by nothing else (a tied embedding is not)."""
    by_weight: dict[str, list[Node]] = {}
    for node in gm.graph.nodes:
        if producer_kind(gm, node) == "linear":
            by_weight.setdefault(node.args[1].target, []).append(node)
    applied = {}
    for weight, nodes in by_weight.items():
        names = sorted(n.name for n in nodes)
        biases = {bias_target(n) for n in nodes}
        (bias,) = biases if len(biases) == 1 else (None,)
        computed = [n for n in nodes if bias_target(n) is None and _bias_arg(n) is not None]
        if (
            len(nodes) > 1
            and not computed
            and len(biases) == 1
            and sorted(uses.get(id(get_attr_tensor(gm, weight)), [])) == names
            and (bias is None or sorted(uses.get(id(get_attr_tensor(gm, bias)), [])) == names)
        ):
            applied[weight] = [n.name for n in nodes]
    return applied


def reads_only_shape(node: Node) -> bool:
    """`x.size(1)`, `x.dim()`, `x.shape`, aten.sym_size, `x.new_zeros(shape)`: the value depends
    on the input's shape (and dtype), never on its values (RoPE's positions under a dynamic
    token axis, Swin's attention mask), so what is computed from it is a constant at each
    length, not an input-dependent tensor."""
    if node.op == "call_method":
        return node.target in ("size", "dim", "new_zeros", "new_ones")
    if node.op != "call_function":
        return False
    if node.target is getattr:
        return len(node.args) > 1 and node.args[1] == "shape"
    return node.target in (torch.ops.aten.sym_size.int, torch.ops.aten.sym_size.default)


def analyze(gm: torch.fx.GraphModule, scope: list[str] | None = None) -> Analysis:
    """Find unit spaces, their layouts, consumers and dependency groups (needs tensor_meta)."""
    plain: frozenset[str] = frozenset()
    restated: frozenset[str] = frozenset()
    lookups: frozenset[str] = frozenset()
    while True:  # again while a GQA attention's query heads were not proven, a norm would
        # rather restate its units than freeze, or an embedding turned out a per-head bias
        walk = Propagation(gm, scope, plain, restated, lookups)
        walk.run()
        n = walk.n_units
        roots = np.array([walk.unions.find(u) for u in range(n)], dtype=np.int64)
        unproven = _unproven_sites(walk, roots)
        wanted = frozenset(walk.restate_wanted) - restated
        biases = frozenset(walk.bias_embeddings) - lookups
        if not unproven and not wanted and not biases:
            break
        plain, restated, lookups = plain | unproven, restated | wanted, lookups | biases
    unit_params = unit_costs(gm, walk)
    unit_macs = unit_costs(gm, walk, per_position=True)
    groups: list[Group] = []
    unit_group = np.full(n, -1, dtype=np.int64)
    by_root: dict[int, list[int]] = {}
    for u in range(n):
        by_root.setdefault(int(roots[u]), []).append(u)
    spaces = sorted(walk.spaces.values(), key=lambda s: s.offset)
    offsets = np.array([s.offset for s in spaces], dtype=np.int64)
    for root in sorted(by_root):
        units = by_root[root]
        members = []
        for u in units:  # the space holding u: the last one starting at or before it
            space = spaces[int(np.searchsorted(offsets, u, side="right")) - 1]
            members.append((space.name, u - space.offset))
        reasons = sorted({walk.frozen[u] for u in units if u in walk.frozen})
        frozen_at = next(
            (walk.frozen_at.get(u) for u in units if reasons and walk.frozen.get(u) == reasons[0]),
            None,
        )
        coupled = sorted(set().union(*(walk.coupled.get(u, set()) for u in units)))
        group = Group(
            index=len(groups),
            members=tuple(members),
            frozen=reasons[0] if reasons else None,
            frozen_at=frozen_at,
            dead=not reasons and not walk.read[units].any(),
            params=int(sum(unit_params[u] for u in units)),
            coupled_by=tuple(coupled),
            macs=int(sum(unit_macs[u] for u in units)),
        )
        unit_group[units] = group.index
        groups.append(group)
    _set_follows(walk, groups, unit_group)
    return Analysis(
        walk.spaces,
        walk.layouts,
        walk.consumers,
        walk.channel_params,
        groups,
        unit_group,
        walk.reshapes,
        walk.splits,
        walk.permutations,
        norm_readers=walk.norm_readers,
        sites={space: site for space, (site, _) in walk.sites.items()},
        shared_kv=walk.shared_kv,
        reapplied=frozenset(walk.reapplied),
    )


def _unproven_sites(walk: Propagation, roots: np.ndarray) -> frozenset[str]:
    """GQA attention nodes whose query heads are not exactly units of their own: the site must
    hold the query space's units slot by slot (head by head), and those heads must reach no
    other reader and couple with no other unit."""
    bad = set()
    nodes = {node.name: node for node in walk.gm.graph.nodes}
    for name, (site, attention) in walk.sites.items():
        space, layout = walk.spaces[name], walk.layouts.get(site)
        own = np.arange(space.offset, space.offset + space.size)
        outside = np.ones(len(roots), dtype=bool)
        outside[own] = False
        readers = [c for c in walk.consumers if np.isin(c.ids, own).any()]
        if (
            layout is None
            or layout.axis != len(shape_of(nodes[site])) - 1
            or len(layout.ids) != space.size
            or not np.array_equal(roots[np.maximum(layout.ids, 0)], roots[own])
            or np.isin(roots[outside], roots[own]).any()
            or len(readers) != 1
        ):
            bad.add(attention)
    return frozenset(bad)


def _set_follows(walk: Propagation, groups: list[Group], unit_group: np.ndarray) -> None:
    """A shared KV head's group follows the groups of the query heads that read it."""
    leaders: dict[int, set[int]] = {}
    for share in walk.shared_kv:
        for slot, query in zip(share.slots, share.query):
            kv = share.source_ids[slot]
            if kv >= 0 and query >= 0:
                leaders.setdefault(int(unit_group[kv]), set()).add(int(unit_group[query]))
    for index, heads in leaders.items():
        if index not in heads and groups[index].frozen is None:
            groups[index].follows = tuple(sorted(heads))
