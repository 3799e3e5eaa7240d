"""Prefix caching: score a candidate from the first layer its mask changes.

The scoring graph has one Ablate node per unit space. Two masks that agree on every space
before the k-th Ablate node compute the same values up to it, so the values that cross that
point (its *cut*) can be kept from an earlier pass over the same batch and only the rest of
the graph runs. A pass from the inputs runs one compiled copy of the graph; a pass from a later
cut interprets the graph's nodes from that cut on (one compiled module per cut made the setup
quadratic in the graph: 224 of DenseNet-121's 258 s of prepare). Either also returns the values
crossing every later cut, which are cached under the mask prefix that produced them. Sweeps
that remove one group at a time from the same mask then pay only for the layers from the
removed group onwards. Exact: the same ops run on the same tensors as in the full graph.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch
import torch.fx

from legoc.ir.ops import Ablate


class _From(torch.fx.Interpreter):
    """Runs a graph's nodes not already in its initial environment, keeping the `wanted`
    values (a later cut's live values) as they are computed."""

    def __init__(self, gm: torch.fx.GraphModule, wanted: set[torch.fx.Node]):
        super().__init__(gm)
        self.wanted = wanted
        self.captured: dict[torch.fx.Node, object] = {}

    def run_node(self, n: torch.fx.Node):
        result = super().run_node(n)
        if n in self.wanted:
            self.captured[n] = result
        return result


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
        self.starts = [0] + [position[n] for n in self.cut_nodes]  # cut 0: the graph's inputs
        last_use = {n: max((position[u] for u in n.users), default=-1) for n in nodes}
        self.live = [self._live(nodes, last_use, start) for start in self.starts]
        self.gm, self.nodes = gm, nodes
        self.full = self._suffix(gm, nodes, 0, 0)
        self.entries: OrderedDict[tuple, tuple[tuple[torch.Tensor, ...], int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _live(nodes, last_use, start) -> list[torch.fx.Node]:
        """Values computed before `start` that a node at or after it reads."""
        if start == 0:
            return [n for n in nodes if n.op == "placeholder"]
        return [
            n for n in nodes[:start] if n.op not in ("get_attr", "output") and last_use[n] >= start
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
        for cut in range(len(self.starts) - 1, 0, -1):
            key = (cut, batch, sigs[cut])
            if key in self.entries:
                self.entries.move_to_end(key)
                k, values = cut, self.entries[key][0]
                break
        self.hits += k > 0
        self.misses += k == 0
        if k == 0:
            out, later = self.full(*values)
        else:
            out, later = self._run_from(k, values)
        offset = 0
        for cut in range(k + 1, len(self.live)):
            size = len(self.live[cut])
            self._store((cut, batch, sigs[cut]), tuple(later[offset : offset + size]))
            offset += size
        return out

    def _run_from(self, k: int, values: tuple) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The graph from cut `k` on, fed that cut's live values: (output, later cut values)."""
        wanted = {n for j in range(k + 1, len(self.live)) for n in self.live[j]}
        start = self.starts[k]
        runner = _From(self.gm, wanted)
        # before the cut: not run, but weights are fetched again where read after it
        env = {n: None for n in self.nodes[:start] if n.op != "get_attr"}
        env.update(zip(self.live[k], values))
        out = runner.run(initial_env=env, enable_io_processing=False)
        known = {**dict(zip(self.live[k], values)), **runner.captured}  # crossing both cuts
        later = [known[n] for j in range(k + 1, len(self.live)) for n in self.live[j]]
        return out, later

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
