"""Composing blocks into one block: sequential (outputs feed inputs) or parallel (the same
inputs, outputs side by side or concatenated on the last axis).

Every part's names are prefixed with its part name (`onnx.compose.add_prefix`), so internal
names never clash; only the composed block's public inputs and outputs are renamed back.
Shapes, dtypes, opsets and IR versions are checked before anything is built, and the composed
block is checked numerically against running its parts one after another.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import compose, helper

import legoc
from legoc.errors import LegocError
from legoc.runtime.block import Block, TensorInfo
from legoc.runtime.files import atomic_file, sha256_file

COMPOSE_TOLERANCE = 1e-5  # max |composed - parts run one after another|; same ops, same order
CHECK_ROWS = 16
DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class Composition:
    """A composed block plus the plan that runs its parts one after another (the oracle)."""

    kind: str  # "sequential" | "parallel"
    parts: list[tuple[str, Block]]
    block: Block
    links: list[dict[str, str]] = field(default_factory=list)  # sequential: input <- output
    concat: bool = False

    def run_parts(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The composed block's outputs computed by running each part on its own."""
        if self.kind == "sequential":
            values = self.parts[0][1].run(feeds)
            for (_, part), link in zip(self.parts[1:], self.links):
                values = part.run({name: values[source] for name, source in link.items()})
            return values
        results = [(name, part.run(feeds)) for name, part in self.parts]
        if self.concat:
            arrays = [next(iter(out.values())) for _, out in results]
            return {self.block.output_names[0]: np.concatenate(arrays, axis=-1)}
        return {f"{name}.{key}": value for name, out in results for key, value in out.items()}

    def check(self, feeds: Mapping[str, np.ndarray] | None = None, seed: int = 0) -> float:
        """Max abs difference of the composed block against its parts; raises past tolerance."""
        if feeds is None:
            feeds = sample_inputs(self.block.inputs, CHECK_ROWS, seed)
        feeds = self.block.feeds(feeds, "compose check data")
        expected = self.run_parts(feeds)
        got = self.block.run(feeds)
        worst = 0.0
        for name, value in expected.items():
            if got[name].shape != value.shape:
                raise LegocError(
                    f"compose: output '{name}' has shape {got[name].shape} but running the parts "
                    f"gives {value.shape}; this is a bug in legoc, please report it"
                )
            if value.size:
                worst = max(worst, float(np.abs(got[name].astype(np.float64) - value).max()))
        if not worst <= COMPOSE_TOLERANCE:
            raise LegocError(
                f"compose: the composed block differs from running its parts by {worst:.3g} "
                f"(> {COMPOSE_TOLERANCE}); nothing was written"
            )
        return worst

    def save(self, path) -> None:
        """onnx.checker (full), then an atomic write."""
        try:
            onnx.checker.check_model(self.block.model, full_check=True)
        except onnx.checker.ValidationError as exc:
            first = str(exc).strip().splitlines()[0]
            raise LegocError(f"compose: the composed block fails onnx.checker: {first}") from None
        with atomic_file(path) as tmp:
            onnx.save(self.block.model, str(tmp))


def sample_inputs(inputs: Sequence[TensorInfo], rows: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs for a check: normal floats, zeros for integers and booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for info in inputs:
        if info.shape is None:
            raise LegocError(f"input '{info.name}' has no known shape; pass check data")
        shape = [
            d if isinstance(d, int) else (rows if i == 0 else 4) for i, d in enumerate(info.shape)
        ]
        if np.issubdtype(info.dtype, np.floating):
            feeds[info.name] = rng.standard_normal(shape).astype(info.dtype)
        else:
            feeds[info.name] = np.zeros(shape, dtype=info.dtype)
    return feeds


def part_names(blocks: Sequence[Block], names: Sequence[str] | None = None) -> list[str]:
    """Unique part names: given, or each file's stem (letters, digits, _ and -)."""
    if names:
        if len(names) != len(blocks):
            raise LegocError(f"compose: {len(names)} names for {len(blocks)} blocks; give one each")
        bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_-]+", n)]
        if bad:
            raise LegocError(f"compose: part name {bad[0]!r}: use letters, digits, _ and - only")
        if len(set(names)) != len(names):
            raise LegocError(f"compose: part names {list(names)} repeat; give distinct names")
        return list(names)
    result: list[str] = []
    for block in blocks:
        stem = block.path.stem if block.path else (block.task or "part")
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "part"
        name, k = base, 2
        while name in result:
            name, k = f"{base}_{k}", k + 1
        result.append(name)
    return result


def labels_of(blocks: Sequence[Block]) -> list[str]:
    """How messages name each block: its file, plus its position when files repeat."""
    labels = [b.label for b in blocks]
    if len(set(labels)) == len(labels):
        return labels
    return [f"{label} (block {k + 1})" for k, label in enumerate(labels)]


def check_versions(blocks: Sequence[Block]) -> None:
    """Same IR version and the same opset per domain, or a message naming both sides."""
    labels = labels_of(blocks)
    first = blocks[0]
    for k, other in enumerate(blocks[1:], start=1):
        if other.model.ir_version != first.model.ir_version:
            raise LegocError(
                f"compose: {labels[0]} has IR version {first.model.ir_version} but "
                f"{labels[k]} has IR version {other.model.ir_version}; save both with the "
                "same onnx version"
            )
    seen: dict[str, tuple[int, str]] = {}
    for block, label in zip(blocks, labels):
        for entry in block.model.opset_import:
            domain = "ai.onnx" if entry.domain in DEFAULT_DOMAINS else entry.domain
            if domain in seen and seen[domain][0] != entry.version:
                version, owner = seen[domain]
                raise LegocError(
                    f"compose: {owner} imports opset {domain} {version} but "
                    f"{label} imports {domain} {entry.version}; convert one with "
                    f"onnx.version_converter.convert_version(model, {max(version, entry.version)})"
                )
            seen.setdefault(domain, (entry.version, label))


def compatible(a: TensorInfo, b: TensorInfo) -> bool:
    if a.dtype != b.dtype:
        return False
    if a.shape is None or b.shape is None:
        return True
    if len(a.shape) != len(b.shape):
        return False
    return all(
        not (isinstance(x, int) and isinstance(y, int)) or x == y for x, y in zip(a.shape, b.shape)
    )


def compose_sequential(
    blocks: Sequence[Block],
    mapping: Mapping[str, str] | None = None,
    names: Sequence[str] | None = None,
) -> Composition:
    """Each block's outputs feed the next one's inputs: by equal name, or by `mapping`
    (output name -> input name, applied at every link). Outputs are the last block's."""
    if len(blocks) < 2:
        raise LegocError("compose sequential: give at least two blocks")
    check_versions(blocks)
    mapping = dict(mapping or {})
    _check_mapping(blocks, mapping)
    labels = labels_of(blocks)
    links = []
    for k, (prev, block) in enumerate(zip(blocks, blocks[1:])):
        prev_label, label = labels[k], labels[k + 1]
        link = {}
        outs = {o.name: o for o in prev.outputs}
        for info in block.inputs:
            sources = [o for o, i in mapping.items() if i == info.name and o in outs]
            source = sources[0] if sources else (info.name if info.name in outs else None)
            if source is None:
                raise LegocError(
                    f"compose sequential: {label} input '{info.name}' "
                    f"({info.describe()}) has no source: {prev_label} outputs "
                    f"{sorted(outs)}; map one explicitly, e.g. --map {prev.output_names[0]}="
                    f"{info.name}"
                )
            if not compatible(outs[source], info):
                raise LegocError(
                    f"compose sequential: {prev_label} output '{source}' is "
                    f"{outs[source].describe()} but {label} input '{info.name}' expects "
                    f"{info.describe()}"
                )
            link[info.name] = source
        links.append(link)
    names = part_names(blocks, names)
    prefixed = [_prefixed(block, name) for block, name in zip(blocks, names)]
    renames: list[dict[str, str]] = [{f"{names[0]}/{i}": i for i in blocks[0].input_names}]
    for k, link in enumerate(links, start=1):
        renames.append({f"{names[k]}/{i}": f"{names[k - 1]}/{o}" for i, o in link.items()})
    last = len(blocks) - 1
    renames[last].update({f"{names[last]}/{o}": o for o in blocks[last].output_names})
    inputs = [_value_info(v, v.name) for v in _graph_inputs(blocks[0])]
    outputs = [_value_info(v, v.name) for v in blocks[last].model.graph.output]
    model = _assemble("sequential", blocks, prefixed, renames, inputs, outputs, [])
    composition = Composition("sequential", list(zip(names, blocks)), Block(model), links)
    _set_metadata(composition, links)
    return composition


def compose_parallel(
    blocks: Sequence[Block], concat: bool = False, names: Sequence[str] | None = None
) -> Composition:
    """The blocks run on the same inputs; outputs side by side (`PART.OUTPUT`) or, with
    `concat`, one output concatenated on the last axis in block order."""
    if len(blocks) < 2:
        raise LegocError("compose parallel: give at least two blocks")
    check_versions(blocks)
    labels = labels_of(blocks)
    first = blocks[0]
    for other, label in zip(blocks[1:], labels[1:]):
        if set(other.input_names) != set(first.input_names):
            raise LegocError(
                f"compose parallel: {labels[0]} takes inputs {first.input_names} but "
                f"{label} takes {other.input_names}; parallel blocks share their inputs"
            )
        theirs = {i.name: i for i in other.inputs}
        for info in first.inputs:
            if not compatible(info, theirs[info.name]):
                raise LegocError(
                    f"compose parallel: {labels[0]} input '{info.name}' is {info.describe()} "
                    f"but {label} input '{info.name}' is {theirs[info.name].describe()}"
                )
    if concat:
        _check_concat(blocks)
    names = part_names(blocks, names)
    prefixed = [_prefixed(block, name) for block, name in zip(blocks, names)]
    renames = [{f"{n}/{i}": i for i in b.input_names} for b, n in zip(blocks, names)]
    inputs = [_merged_input(v, blocks) for v in _graph_inputs(first)]
    extra_nodes = []
    if concat:
        out_names = {b.output_names[0] for b in blocks}
        public = out_names.pop() if len(out_names) == 1 else "output"
        sources = [f"{n}/{b.output_names[0]}" for b, n in zip(blocks, names)]
        extra_nodes.append(helper.make_node("Concat", sources, [public], name="concat", axis=-1))
        outputs = [_concat_output(blocks, public)]
    else:
        outputs = []
        for block, name, rename in zip(blocks, names, renames):
            for value in block.model.graph.output:
                rename[f"{name}/{value.name}"] = f"{name}.{value.name}"
                outputs.append(_value_info(value, f"{name}.{value.name}"))
    model = _assemble("parallel", blocks, prefixed, renames, inputs, outputs, extra_nodes)
    composition = Composition("parallel", list(zip(names, blocks)), Block(model), concat=concat)
    _set_metadata(composition, [])
    return composition


def _check_mapping(blocks: Sequence[Block], mapping: dict[str, str]) -> None:
    outs = {o for b in blocks[:-1] for o in b.output_names}
    ins = {i for b in blocks[1:] for i in b.input_names}
    for out, inp in mapping.items():
        if out not in outs:
            raise LegocError(
                f"compose sequential: --map {out}={inp}: no block but the last has an output "
                f"'{out}' (outputs: {sorted(outs)})"
            )
        if inp not in ins:
            raise LegocError(
                f"compose sequential: --map {out}={inp}: no block but the first has an input "
                f"'{inp}' (inputs: {sorted(ins)})"
            )


def _check_concat(blocks: Sequence[Block]) -> None:
    labels = labels_of(blocks)
    first = blocks[0]
    for block, label in zip(blocks, labels):
        if len(block.outputs) != 1:
            raise LegocError(
                f"compose parallel --concat: {label} has {len(block.outputs)} outputs "
                f"{block.output_names}; concatenation needs exactly one per block"
            )
    a = first.outputs[0]
    for other, label in zip(blocks[1:], labels[1:]):
        b = other.outputs[0]
        lead_a = None if a.shape is None else a.shape[:-1]
        lead_b = None if b.shape is None else b.shape[:-1]
        same_lead = (
            lead_a is None
            or lead_b is None
            or (
                len(lead_a) == len(lead_b)
                and all(
                    not (isinstance(x, int) and isinstance(y, int)) or x == y
                    for x, y in zip(lead_a, lead_b)
                )
            )
        )
        if a.dtype != b.dtype or not same_lead:
            raise LegocError(
                f"compose parallel --concat: {labels[0]} output '{a.name}' is {a.describe()} "
                f"but {label} output '{b.name}' is {b.describe()}; concatenation needs "
                "the same dtype and the same dims except the last"
            )


def _graph_inputs(block: Block) -> list[onnx.ValueInfoProto]:
    names = set(block.input_names)
    return [v for v in block.model.graph.input if v.name in names]


def _value_info(value: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(value)
    copy.name = name
    return copy


def _merged_input(value: onnx.ValueInfoProto, blocks: Sequence[Block]) -> onnx.ValueInfoProto:
    """A shared input whose dims are static where any part's are."""
    merged = _value_info(value, value.name)
    for block in blocks[1:]:
        other = next(v for v in block.model.graph.input if v.name == value.name)
        for dim, theirs in zip(merged.type.tensor_type.shape.dim, other.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value") and theirs.HasField("dim_value"):
                dim.dim_value = theirs.dim_value
    return merged


def _concat_output(blocks: Sequence[Block], name: str) -> onnx.ValueInfoProto:
    infos = [b.outputs[0] for b in blocks]
    elem = blocks[0].model.graph.output[0].type.tensor_type.elem_type
    if any(i.shape is None for i in infos):
        return helper.make_tensor_value_info(name, elem, None)
    lasts = [i.shape[-1] for i in infos]
    last = sum(lasts) if all(isinstance(d, int) for d in lasts) else None
    shape = [d for d in infos[0].shape[:-1]] + [last]
    return helper.make_tensor_value_info(name, elem, shape)


def _prefixed(block: Block, name: str) -> onnx.ModelProto:
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


def _assemble(
    kind: str,
    blocks: Sequence[Block],
    prefixed: Sequence[onnx.ModelProto],
    renames: Sequence[dict[str, str]],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    extra_nodes: list[onnx.NodeProto],
) -> onnx.ModelProto:
    nodes, initializers, sparse, value_info, functions = [], [], [], [], []
    public = {v.name for v in [*inputs, *outputs]}
    for model, rename in zip(prefixed, renames):
        graph = model.graph
        _rename(graph, rename)
        nodes += graph.node
        initializers += graph.initializer
        sparse += graph.sparse_initializer
        value_info += [v for v in graph.value_info if v.name not in public]
        functions += model.functions
    nodes = _live(nodes + extra_nodes, {v.name for v in outputs})
    value_info = list({v.name: v for v in value_info}.values())
    graph = helper.make_graph(
        nodes,
        f"legoc_{kind}",
        inputs,
        outputs,
        initializer=initializers,
        value_info=value_info,
        sparse_initializer=sparse,
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


def _set_metadata(composition: Composition, links: list[dict[str, str]]) -> None:
    parts = []
    props: dict[str, str] = {}
    sources = set()
    for name, block in composition.parts:
        parts.append(
            {
                "name": name,
                "file": str(block.path) if block.path else None,
                "sha256": sha256_file(block.path) if block.path else None,
                "task": block.task,
                "inputs": block.input_names,
                "outputs": block.output_names,
            }
        )
        sources.add(block.metadata.get("legoc.source_sha256"))
        for key, value in block.metadata.items():
            props[f"parts.{name}.{key}"] = value
    names = [name for name, _ in composition.parts]
    joined = [
        {f"{names[k + 1]}.{i}": f"{names[k]}.{o}" for i, o in link.items()}
        for k, link in enumerate(links)
    ]
    tasks = ", ".join(block.task or name for name, block in composition.parts)
    props.update(
        {
            "legoc.version": legoc.__version__,
            "legoc.task": f"{composition.kind}({tasks})",
            "legoc.inputs": json.dumps(composition.block.input_names),
            "legoc.parts": json.dumps(names),
            "legoc.composition": json.dumps(
                {
                    "kind": composition.kind,
                    "concat": composition.concat,
                    "parts": parts,
                    "links": joined,
                },
                sort_keys=True,
            ),
        }
    )
    if len(sources) == 1 and None not in sources:
        props["legoc.source_sha256"] = sources.pop()
    model = composition.block.model
    del model.metadata_props[:]
    for key in sorted(props):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, props[key]
    composition.block.metadata = dict(props)
