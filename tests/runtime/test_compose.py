"""Composition: numbers against running the parts one after another with plain onnxruntime,
every mismatch message naming both sides, names that never clash, namespaced metadata."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from legoc.errors import LegocError
from legoc.runtime import Block, compose_parallel, compose_sequential
from legoc.runtime.compose import COMPOSE_TOLERANCE, Composition
from tests.runtime.helpers import rows, save_linear


def ort_run(path, **feeds) -> dict[str, np.ndarray]:
    """The oracle: the part's own file in a plain onnxruntime session."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def refused(build, *needles: str) -> str:
    with pytest.raises(LegocError) as info:
        build()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.fixture
def adapter(tmp_path):
    """A block 4 -> 6 that lets mlp (6 -> 4) feed mlp again."""
    return save_linear(tmp_path / "adapter.onnx", 4, 6, seed=1)


def test_sequential_equals_running_the_parts_one_after_another(tiny, adapter):
    mlp = tiny["mlp"]["block"]
    parts = [Block.load(p) for p in (mlp, adapter, mlp)]
    composition = compose_sequential(parts, mapping={"logits": "x"})
    x = rows((33, 6), seed=3)
    h = ort_run(mlp, x=x)["logits"]
    h = ort_run(adapter, x=h)["logits"]
    expected = ort_run(mlp, x=h)["logits"]
    got = composition.block(x=x)
    assert list(got) == ["logits"]
    assert np.abs(got["logits"] - expected).max() <= COMPOSE_TOLERANCE
    assert composition.check() <= COMPOSE_TOLERANCE
    assert composition.block.input_names == ["x"]


def test_sequential_needs_an_explicit_mapping_when_names_differ(tiny, tmp_path):
    head = Block.load(save_linear(tmp_path / "head.onnx", 4, 3, input_name="h"))
    mlp = Block.load(tiny["mlp"]["block"])
    refused(
        lambda: compose_sequential([mlp, head]),
        "head.onnx input 'h'",
        "mlp.onnx outputs ['logits']",
        "--map logits=h",
    )
    composition = compose_sequential([mlp, head], mapping={"logits": "h"})
    x = rows((5, 6))
    expected = head(h=mlp(x=x)["logits"])["logits"]
    assert np.abs(composition.block(x=x)["logits"] - expected).max() <= COMPOSE_TOLERANCE


def test_parallel_side_by_side_keeps_each_output_under_its_part_name(tiny):
    mlp, mlp2 = (Block.load(tiny[k]["block"]) for k in ("mlp", "mlp2"))
    composition = compose_parallel([mlp, mlp2, mlp])
    x = rows((9, 6))
    got = composition.block(x=x)
    assert list(got) == ["mlp.logits", "mlp2.logits", "mlp_2.logits"]
    for name, path in [("mlp", tiny["mlp"]["block"]), ("mlp2", tiny["mlp2"]["block"])]:
        expected = ort_run(path, x=x)["logits"]
        assert np.abs(got[f"{name}.logits"] - expected).max() <= COMPOSE_TOLERANCE
    assert composition.check() <= COMPOSE_TOLERANCE


def test_parallel_concatenated_is_one_output_on_the_last_axis(tiny):
    mlp, mlp2 = (Block.load(tiny[k]["block"]) for k in ("mlp", "mlp2"))
    composition = compose_parallel([mlp, mlp2], concat=True)
    assert [(t.name, t.shape) for t in composition.block.outputs] == [("logits", ("batch", 6))]
    x = rows((7, 6))
    expected = np.concatenate(
        [ort_run(tiny[k]["block"], x=x)["logits"] for k in ("mlp", "mlp2")], axis=-1
    )
    assert np.abs(composition.block(x=x)["logits"] - expected).max() <= COMPOSE_TOLERANCE
    nodes = [n.op_type for n in composition.block.model.graph.node]
    assert nodes.count("Concat") == 1


def test_cnn_blocks_compose_in_parallel_and_pass_the_full_checker(tiny, tmp_path):
    cnn = Block.load(tiny["cnn"]["block"])
    composition = compose_parallel([cnn, cnn], concat=True, names=["left", "right"])
    out = tmp_path / "pair.onnx"
    composition.save(out)
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    x = rows((4, 1, 8, 8))
    single = ort_run(tiny["cnn"]["block"], x=x)["logits"]
    got = ort_run(out, x=x)["logits"]
    assert np.abs(got - np.concatenate([single, single], -1)).max() <= COMPOSE_TOLERANCE


def test_names_never_clash_and_metadata_is_namespaced_per_part(tiny):
    mlp, mlp2 = Block.load(tiny["mlp"]["block"]), Block.load(tiny["mlp2"]["block"])
    # different values under the same keys (legoc.rationale, legoc.scores) never conflict
    assert mlp.metadata["legoc.rationale"] != mlp2.metadata["legoc.rationale"]
    mixed = compose_parallel([mlp, mlp2]).block.metadata
    assert mixed["parts.mlp.legoc.rationale"] == mlp.metadata["legoc.rationale"]
    assert mixed["parts.mlp2.legoc.rationale"] == mlp2.metadata["legoc.rationale"]
    composition = compose_parallel([mlp, mlp])
    meta = composition.block.metadata
    assert composition.block.meta("legoc.parts") == ["mlp", "mlp_2"]
    assert meta["parts.mlp.legoc.task"] == meta["parts.mlp_2.legoc.task"] == "tiny-mlp"
    assert meta["legoc.task"] == "parallel(tiny-mlp, tiny-mlp)"
    parts = composition.block.meta("legoc.composition")["parts"]
    assert [p["name"] for p in parts] == ["mlp", "mlp_2"]
    assert all(len(p["sha256"]) == 64 for p in parts)
    graph = composition.block.model.graph
    defined = [o for n in graph.node for o in n.output] + [t.name for t in graph.initializer]
    assert len(defined) == len(set(defined))
    assert {t.name.split("/")[0] for t in graph.initializer} == {"mlp", "mlp_2"}


def test_a_composed_block_composes_again(tiny):
    mlp, mlp2 = (Block.load(tiny[k]["block"]) for k in ("mlp", "mlp2"))
    inner = compose_parallel([mlp, mlp2], concat=True, names=["a", "b"])
    outer = compose_parallel([inner.block, mlp], names=["pair", "single"])
    keys = set(outer.block.metadata)
    assert "parts.pair.parts.a.legoc.task" in keys and "parts.single.legoc.task" in keys
    assert outer.check() <= COMPOSE_TOLERANCE
    x = rows((3, 6))
    got = outer.block(x=x)
    assert np.array_equal(got["pair.logits"][:, :4], mlp(x=x)["logits"])


@pytest.mark.parametrize(
    "case",
    [
        "shape",
        "dtype",
        "opset",
        "ir",
        "parallel-shape",
        "parallel-names",
        "concat-dims",
        "concat-outputs",
        "map-output",
        "map-input",
    ],
)
def test_every_mismatch_names_both_sides(tiny, tmp_path, case):
    mlp = Block.load(tiny["mlp"]["block"])
    cnn = Block.load(tiny["cnn"]["block"])

    def lin(name, *args, **kwargs):
        return Block.load(save_linear(tmp_path / f"{name}.onnx", *args, **kwargs))

    if case == "shape":
        refused(
            lambda: compose_sequential([mlp, mlp], mapping={"logits": "x"}),
            "output 'logits' is float32[batch,4]",
            "input 'x' expects float32[batch,6]",
            "mlp.onnx (block 1)",
            "mlp.onnx (block 2)",
        )
    elif case == "dtype":
        wide = lin("f64", 4, 2, dtype=TensorProto.DOUBLE)
        refused(
            lambda: compose_sequential([mlp, wide], mapping={"logits": "x"}),
            "mlp.onnx output 'logits' is float32[batch,4]",
            "f64.onnx input 'x' expects float64[batch,4]",
        )
    elif case == "opset":
        refused(
            lambda: compose_sequential([mlp, lin("op18", 4, 2, opset=18)], {"logits": "x"}),
            "mlp.onnx imports opset ai.onnx 17",
            "op18.onnx imports ai.onnx 18",
        )
    elif case == "ir":
        refused(
            lambda: compose_parallel([mlp, lin("ir9", 6, 2, ir_version=9)]),
            "mlp.onnx has IR version 8",
            "ir9.onnx has IR version 9",
        )
    elif case == "parallel-shape":
        refused(
            lambda: compose_parallel([mlp, cnn]),
            "mlp.onnx input 'x' is float32[batch,6]",
            "cnn.onnx input 'x' is float32[batch,1,8,8]",
        )
    elif case == "parallel-names":
        refused(
            lambda: compose_parallel([mlp, lin("h", 6, 2, input_name="h")]),
            "mlp.onnx takes inputs ['x']",
            "h.onnx takes ['h']",
        )
    elif case == "concat-dims":
        other = lin("f64", 6, 2, dtype=TensorProto.DOUBLE)
        refused(
            lambda: compose_parallel([mlp, other], concat=True),
            "input 'x' is float32[batch,6]",
            "f64.onnx input 'x' is float64[batch,6]",
        )
    elif case == "concat-outputs":
        pair = compose_parallel([mlp, mlp]).block
        refused(
            lambda: compose_parallel([pair, mlp], concat=True),
            "has 2 outputs ['mlp.logits', 'mlp_2.logits']",
            "exactly one per block",
        )
    elif case == "map-output":
        refused(
            lambda: compose_sequential([mlp, mlp], mapping={"probs": "x"}),
            "--map probs=x",
            "no block but the last has an output 'probs'",
            "['logits']",
        )
    elif case == "map-input":
        refused(
            lambda: compose_sequential([mlp, mlp], mapping={"logits": "h"}),
            "--map logits=h",
            "input 'h'",
            "['x']",
        )


def test_a_concat_of_different_leading_dims_is_refused(tmp_path):
    for name, rows_out in [("a", 2), ("b", 5)]:
        model = onnx.load(str(save_linear(tmp_path / f"{name}.onnx", 6, 3)))
        model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = rows_out
        onnx.save(model, str(tmp_path / f"{name}.onnx"))
    a, b = Block.load(tmp_path / "a.onnx"), Block.load(tmp_path / "b.onnx")
    refused(
        lambda: compose_parallel([a, b], concat=True),
        "a.onnx output 'logits' is float32[2,3]",
        "b.onnx output 'logits' is float32[5,3]",
    )


def test_a_numeric_mismatch_is_refused_and_nothing_is_written(tiny, tmp_path, monkeypatch):
    mlp = Block.load(tiny["mlp"]["block"])
    composition = compose_parallel([mlp, mlp], concat=True)
    original = Composition.run_parts

    def off_by_a_bit(self, feeds):
        return {k: v + 1e-3 for k, v in original(self, feeds).items()}

    monkeypatch.setattr(Composition, "run_parts", off_by_a_bit)
    refused(composition.check, "differs from running its parts by 0.001")


def test_part_names_must_be_distinct_and_plain(tiny):
    mlp = Block.load(tiny["mlp"]["block"])
    refused(lambda: compose_parallel([mlp, mlp], names=["a", "a"]), "repeat")
    refused(lambda: compose_parallel([mlp, mlp], names=["a", "b/c"]), "'b/c'")
    refused(lambda: compose_parallel([mlp, mlp], names=["a"]), "1 names for 2 blocks")
    refused(lambda: compose_sequential([mlp]), "at least two blocks")


def test_outputs_nothing_reads_are_pruned_with_their_weights(tiny, adapter):
    mlp, mlp2 = (Block.load(tiny[k]["block"]) for k in ("mlp", "mlp2"))
    pair = compose_parallel([mlp, mlp2], names=["four", "two"]).block
    chain = compose_sequential([pair, Block.load(adapter)], mapping={"four.logits": "x"})
    names = {t.name for t in chain.block.model.graph.initializer}
    assert names and not [n for n in names if "/two/" in n]
    assert chain.block.param_count() == mlp.param_count() + 4 * 6 + 6
    assert chain.check() <= COMPOSE_TOLERANCE
