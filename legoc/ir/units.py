"""What the unit analysis finds: unit spaces, layouts, readers, per-unit parameters, groups.

A *unit* is one output feature of a Linear or one output channel of a Conv; units are numbered
globally (each space holds `size` ids from `offset`), and a *layout* says which unit sits in
each slot along one axis of a tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
    kind: str  # linear | conv1d | conv2d | grouped_conv1d | grouped_conv2d
    size: int
    offset: int  # first global unit id
    weight: str  # get_attr target of the weight
    bias: str | None
    groups: int = 1  # a grouped conv's groups: its units go a whole group at a time


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


@dataclass(frozen=True)
class ChannelPermutation:
    """Nodes `first`..`last` only reorder the unit axis (a channel shuffle): output slot k holds
    input slot `order[k]`; `ids` is the input's layout. Slicing replaces them by one gather."""

    first: str
    last: str
    axis: int
    order: np.ndarray
    ids: np.ndarray


@dataclass(frozen=True)
class SharedKV:
    """Argument `arg` (k or v) of attention `node` repeats the KV heads of `source` (along
    `axis`, units `source_ids`) over the query heads: slot i reads source slot `slots[i]`, for
    query head unit `query[i]`. Slicing gathers the kept KV heads per kept query head."""

    node: str
    arg: int
    source: str
    axis: int
    source_ids: np.ndarray
    slots: np.ndarray
    query: np.ndarray


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
    frozen_at: str | None = None  # the op and node that froze it, e.g. "expand at node x_3"
    # derived: removed exactly when every group listed here is (a KV head shared by query
    # heads); the search never picks it
    follows: tuple[int, ...] = ()


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
    permutations: list[ChannelPermutation] = field(default_factory=list)
    norm_readers: dict[str, str] = field(default_factory=dict)  # Linear/Conv -> norm it reads
    # space -> the node its units are ablated at, where that is not its producer (a GQA
    # query head: its attention output)
    sites: dict[str, str] = field(default_factory=dict)
    shared_kv: list[SharedKV] = field(default_factory=list)
    # Linear nodes applying a weight an earlier node applies (legoc.ir.weight_uses): their
    # units and columns are the earlier use's, so its parameters are counted there
    reapplied: frozenset[str] = frozenset()

    @property
    def restated_norms(self) -> set[str]:
        """Norm nodes whose output is a unit space of their own (handlers/norm.restate)."""
        return {space.node for space in self.spaces.values() if space.kind == "norm"}

    def space_of(self, unit_id: int) -> tuple[str, int]:
        for space in self.spaces.values():
            if space.offset <= unit_id < space.offset + space.size:
                return space.name, unit_id - space.offset
        raise KeyError(unit_id)
