"""Prefix caching: score a candidate from the first layer its mask changes.

The scoring graph has one Ablate node per unit space. Two masks that agree on every space
before the k-th Ablate node compute the same values up to it, so the values that cross that
point (its *cut*) can be kept from an earlier pass over the same batch and only the rest of
the graph runs. The graph is split once into one suffix module per cut; each suffix also
returns the values crossing every later cut, which are cached under the mask prefix that
produced them. Sweeps that remove one group at a time from the same mask then pay only for
the layers from the removed group onwards. Exact: the suffix runs the same ops on the same
tensors as the full graph would.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch
import torch.fx

from legoc.ir.ops import Ablate


class PrefixCache:
    """Suffix modules of one scoring graph and an LRU cache of cut values, capped in bytes."""

    def __init__(self, gm: torch.fx.GraphModule, budget_bytes: int):
        self.budget_bytes = budget_bytes
        nodes = list(gm.graph.nodes)
        position = {node: i for i, node in enumerate(nodes)}
        self.cut_nodes = [
            n
            for n in nodes
            if n.op == "call_module" and isinstance(gm.get_submodule(n.target), Ablate)
        ]
        self.ablates = [gm.get_submodule(n.target) for n in self.cut_nodes]
        starts = [0] + [position[n] for n in self.cut_nodes]  # cut 0: the graph's inputs
        self.live = [self._live(nodes, position, start) for start in starts]
        self.suffixes = [self._suffix(gm, nodes, start, k) for k, start in enumerate(starts)]
        self.entries: OrderedDict[tuple, tuple[tuple[torch.Tensor, ...], int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _live(nodes, position, start) -> list[torch.fx.Node]:
        """Values computed before `start` that a node at or after it reads."""
        if start == 0:
            return [n for n in nodes if n.op == "placeholder"]
        return [
            n
            for n in nodes[:start]
            if n.op not in ("get_attr", "output") and any(position[u] >= start for u in n.users)
        ]

    def _suffix(self, gm, nodes, start, k) -> torch.fx.GraphModule:
        """The graph from `start` on, fed the live values; returns (output, later cut values)."""
        graph = torch.fx.Graph()
        env: dict[torch.fx.Node, torch.fx.Node] = {}
        for i, node in enumerate(self.live[k]):
            env[node] = graph.placeholder(f"live_{i}")

        def lookup(node: torch.fx.Node) -> torch.fx.Node:
            if node not in env:  # a weight read after the cut: fetch it here too
                env[node] = graph.get_attr(node.target)
            return env[node]

        output = None
        for node in nodes[start:]:
            if node.op == "output":
                output = node
                continue
            if node.op == "placeholder":
                continue
            env[node] = graph.node_copy(node, lookup)
        result = torch.fx.map_arg(output.args[0], lookup)
        later = [lookup(n) for j in range(k + 1, len(self.live)) for n in self.live[j]]
        graph.output((result, tuple(later)))
        return torch.fx.GraphModule(gm, graph, class_name=f"Suffix{k}")

    def signatures(self) -> list[bytes]:
        """Per cut, a digest of the masks of every Ablate before it (the mask prefix)."""
        digest = hashlib.blake2b(digest_size=16)
        sigs = [digest.digest()]
        for module in self.ablates:
            digest.update(module.keep.cpu().numpy().tobytes())
            sigs.append(digest.digest())
        return sigs

    def run(self, batch: int, inputs: list[torch.Tensor], sigs: list[bytes]) -> torch.Tensor:
        """The graph's output on batch number `batch`, from the deepest cached cut."""
        k, values = 0, tuple(inputs)
        for cut in range(len(self.suffixes) - 1, 0, -1):
            key = (cut, batch, sigs[cut])
            if key in self.entries:
                self.entries.move_to_end(key)
                k, values = cut, self.entries[key][0]
                break
        self.hits += k > 0
        self.misses += k == 0
        out, later = self.suffixes[k](*values)
        offset = 0
        for cut in range(k + 1, len(self.live)):
            size = len(self.live[cut])
            self._store((cut, batch, sigs[cut]), tuple(later[offset : offset + size]))
            offset += size
        return out

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0

    def _store(self, key: tuple, values: tuple[torch.Tensor, ...]) -> None:
        if key in self.entries:
            self.entries.move_to_end(key)
            return
        storages = {  # what the values keep alive: whole storages, a view holds its base
            v.untyped_storage().data_ptr(): v.untyped_storage().nbytes()
            for v in values
            if isinstance(v, torch.Tensor)
        }
        size = sum(storages.values())
        if size > self.budget_bytes:
            return
        self.entries[key] = (values, size)
        self.bytes += size
        while self.bytes > self.budget_bytes:
            _, (_, dropped) = self.entries.popitem(last=False)
            self.bytes -= dropped
