"""Composing blocks into one block: sequential (outputs feed inputs) or parallel (the same
inputs, outputs side by side or concatenated on the last axis).

Every part's names are prefixed with its part name (`onnx.compose.add_prefix`), so internal
names never clash; only the composed block's public inputs and outputs are renamed back.
Shapes, dtypes, opsets and IR versions are checked before anything is built, and the composed
block is checked numerically against running its parts one after another.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

import legoc
from legoc.errors import LegocError
from legoc.runtime.block import Block
from legoc.runtime.compose_checks import (
    check_concat,
    check_mapping,
    check_versions,
    compatible,
    labels_of,
)
from legoc.runtime.data import inputs_for, read_arrays, sample_inputs
from legoc.runtime.files import atomic_file, check_output_file, sha256_file
from legoc.runtime.merge import (
    assemble,
    concat_output,
    graph_inputs,
    merged_input,
    prefixed,
    value_info,
)

COMPOSE_TOLERANCE = 1e-5  # max |composed - parts run one after another|; same ops, same order
CHECK_ROWS = 16


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


def compose_files(
    kind: str,
    paths: Sequence[str | Path],
    output: str | Path,
    check_data: str | Path | None = None,
    names: Sequence[str] | None = None,
    **options,
) -> tuple[Composition, float]:
    """Load, compose (`kind` sequential or parallel), check numerically (on `check_data` or
    seeded random rows), write atomically. Returns the composition and the check's max diff."""
    reads = {f"part {i + 1}": path for i, path in enumerate(paths)}
    check_output_file(Path(output), {**reads, "--check-data": check_data})
    blocks = [Block.load(path) for path in paths]
    build = {"sequential": compose_sequential, "parallel": compose_parallel}[kind]
    composition = build(blocks, names=names or None, **options)
    feeds = None
    if check_data is not None:
        arrays = read_arrays(check_data, "--check-data")
        feeds = inputs_for(composition.block.input_names, arrays, "--check-data", str(check_data))
    diff = composition.check(feeds)
    composition.save(output)
    return composition, diff


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
    check_mapping(blocks, mapping)
    labels = labels_of(blocks)
    links = []
    for k, (prev, block) in enumerate(itertools.pairwise(blocks)):
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
    copies = [prefixed(block, name) for block, name in zip(blocks, names)]
    renames: list[dict[str, str]] = [{f"{names[0]}/{i}": i for i in blocks[0].input_names}]
    for k, link in enumerate(links, start=1):
        renames.append({f"{names[k]}/{i}": f"{names[k - 1]}/{o}" for i, o in link.items()})
    last = len(blocks) - 1
    renames[last].update({f"{names[last]}/{o}": o for o in blocks[last].output_names})
    inputs = [value_info(v, v.name) for v in graph_inputs(blocks[0])]
    outputs = [value_info(v, v.name) for v in blocks[last].model.graph.output]
    model = assemble("sequential", blocks, copies, renames, inputs, outputs, [])
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
        check_concat(blocks)
    names = part_names(blocks, names)
    copies = [prefixed(block, name) for block, name in zip(blocks, names)]
    renames = [{f"{n}/{i}": i for i in b.input_names} for b, n in zip(blocks, names)]
    inputs = [merged_input(v, blocks) for v in graph_inputs(first)]
    extra_nodes = []
    if concat:
        out_names = {b.output_names[0] for b in blocks}
        public = out_names.pop() if len(out_names) == 1 else "output"
        sources = [f"{n}/{b.output_names[0]}" for b, n in zip(blocks, names)]
        extra_nodes.append(helper.make_node("Concat", sources, [public], name="concat", axis=-1))
        outputs = [concat_output(blocks, public)]
    else:
        outputs = []
        for block, name, rename in zip(blocks, names, renames):
            for value in block.model.graph.output:
                rename[f"{name}/{value.name}"] = f"{name}.{value.name}"
                outputs.append(value_info(value, f"{name}.{value.name}"))
    model = assemble("parallel", blocks, copies, renames, inputs, outputs, extra_nodes)
    composition = Composition("parallel", list(zip(names, blocks)), Block(model), concat=concat)
    _set_metadata(composition, [])
    return composition


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
                "params": block.rationale_params(),
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
                    "params": sum(part["params"] for part in parts),
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
