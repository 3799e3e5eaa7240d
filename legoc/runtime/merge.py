"""ONNX surgery for composition: prefix every part's names, rename only the public inputs
and outputs, keep the live nodes, and assemble one model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx
from onnx import compose, helper

import legoc
from legoc.errors import LegocError
from legoc.runtime.block import Block
from legoc.runtime.compose_checks import DEFAULT_DOMAINS


def graph_inputs(block: Block) -> list[onnx.ValueInfoProto]:
    """The block's real inputs (not initializers listed as inputs by old exporters)."""
    names = set(block.input_names)
    return [v for v in block.model.graph.input if v.name in names]


def value_info(value: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(value)
    copy.name = name
    return copy


def merged_input(value: onnx.ValueInfoProto, blocks: Sequence[Block]) -> onnx.ValueInfoProto:
    """A shared input whose dims are static where any part's are."""
    merged = value_info(value, value.name)
    for block in blocks[1:]:
        other = next(v for v in block.model.graph.input if v.name == value.name)
        for dim, theirs in zip(merged.type.tensor_type.shape.dim, other.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value") and theirs.HasField("dim_value"):
                dim.dim_value = theirs.dim_value
    return merged


def concat_output(blocks: Sequence[Block], name: str) -> onnx.ValueInfoProto:
    """The type of the parts' single outputs concatenated on the last axis."""
    infos = [b.outputs[0] for b in blocks]
    elem = blocks[0].model.graph.output[0].type.tensor_type.elem_type
    if any(i.shape is None for i in infos):
        return helper.make_tensor_value_info(name, elem, None)
    lasts = [i.shape[-1] for i in infos]
    last = sum(lasts) if all(isinstance(d, int) for d in lasts) else None
    shape = [d for d in infos[0].shape[:-1]] + [last]
    return helper.make_tensor_value_info(name, elem, shape)


def prefixed(block: Block, name: str) -> onnx.ModelProto:
    """A copy of the block with every name prefixed `NAME/` and without metadata."""
    model = onnx.ModelProto()
    model.CopyFrom(block.model)
    del model.metadata_props[:]
    return compose.add_prefix(model, f"{name}/", inplace=True)


def _rename(graph: onnx.GraphProto, names: Mapping[str, str]) -> None:
    """Rename values wherever they are read or written, subgraphs included (outer-scope reads)."""
    for node in graph.node:
        for i, value in enumerate(node.input):
            node.input[i] = names.get(value, value)
        for i, value in enumerate(node.output):
            node.output[i] = names.get(value, value)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                _rename(attribute.g, names)
            for sub in attribute.graphs:
                _rename(sub, names)
    for value in graph.value_info:
        value.name = names.get(value.name, value.name)


def assemble(
    kind: str,
    blocks: Sequence[Block],
    copies: Sequence[onnx.ModelProto],
    renames: Sequence[dict[str, str]],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    extra_nodes: list[onnx.NodeProto],
) -> onnx.ModelProto:
    """One model from the prefixed part copies: each copy's values renamed by its `renames`
    (its inputs onto their sources, public outputs onto their public names), then only the
    nodes and initializers the outputs need."""
    nodes, initializers, sparse, infos, functions = [], [], [], [], []
    public = {v.name for v in [*inputs, *outputs]}
    for model, rename in zip(copies, renames):
        graph = model.graph
        _rename(graph, rename)
        nodes += graph.node
        initializers += graph.initializer
        sparse += graph.sparse_initializer
        infos += [v for v in graph.value_info if v.name not in public]
        functions += model.functions
    nodes = _live(nodes + extra_nodes, {v.name for v in outputs})
    read = set().union(*(_reads(n) for n in nodes)) if nodes else set()
    written = {o for n in nodes for o in n.output}
    graph = helper.make_graph(
        nodes,
        f"legoc_{kind}",
        inputs,
        outputs,
        initializer=[t for t in initializers if t.name in read],
        value_info=list({v.name: v for v in infos if v.name in written}.values()),
        sparse_initializer=[t for t in sparse if t.values.name in read],
    )
    opsets: dict[str, int] = {}
    for block in blocks:
        for entry in block.model.opset_import:
            domain = "" if entry.domain in DEFAULT_DOMAINS else entry.domain
            opsets.setdefault(domain, entry.version)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
        producer_name="legoc",
        producer_version=legoc.__version__,
        functions=functions,
    )
    model.ir_version = blocks[0].model.ir_version
    _check_unique(model)
    return model


def _live(nodes: list[onnx.NodeProto], wanted: set[str]) -> list[onnx.NodeProto]:
    """Drop nodes nothing downstream reads (e.g. an intermediate block's unmapped outputs)."""
    needed = set(wanted)
    keep = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(_reads(node))
    return list(reversed(keep))


def _reads(node: onnx.NodeProto) -> set[str]:
    reads = set(node.input)
    for attribute in node.attribute:
        for graph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
            for sub in graph.node:
                reads |= _reads(sub)
    return reads


def _check_unique(model: onnx.ModelProto) -> None:
    seen: set[str] = set()
    graph = model.graph
    defined = [v.name for v in graph.input] + [t.name for t in graph.initializer]
    defined += [o for n in graph.node for o in n.output if o]
    for name in defined:
        if name in seen:
            raise LegocError(
                f"compose: the composed block would define '{name}' twice (an input and an "
                "output, or two parts, share the name); rename one with --name"
            )
        seen.add(name)
