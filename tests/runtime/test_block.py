"""Block.load exposes a block's interface and metadata; calling it runs onnxruntime; bad inputs
get one line naming the input, what it is and what the block expects."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from legoc.errors import LegocError
from legoc.runtime import Block
from legoc.runtime.scores import metric_value
from tests.runtime.helpers import rows, save_linear


def test_load_exposes_inputs_outputs_and_metadata(tiny):
    block = Block.load(tiny["mlp"]["block"])
    assert [(t.name, str(t.dtype), t.shape) for t in block.inputs] == [
        ("x", "float32", ("batch", 6))
    ]
    assert [(t.name, t.shape) for t in block.outputs] == [("logits", ("batch", 4))]
    assert block.task == "tiny-mlp"
    assert block.meta("legoc.inputs") == ["x"]
    rationale = block.meta("legoc.rationale")
    assert set(rationale) >= {"kept", "total", "faithfulness", "params"}
    assert rationale["params"]["block"] == block.param_count()
    assert block.meta("legoc.missing", "default") == "default"


def test_calling_a_block_matches_onnxruntime_on_the_file(tiny):
    block = Block.load(tiny["cnn"]["block"])
    x = rows((37, 1, 8, 8))
    session = ort.InferenceSession(str(tiny["cnn"]["block"]), providers=["CPUExecutionProvider"])
    (expected,) = session.run(["logits"], {"x": x})
    assert np.array_equal(block(x=x)["logits"], expected)
    assert np.array_equal(block.run({"x": x}, batch_size=8)["logits"], expected)


def test_runtime_accuracy_matches_the_compilers_score_in_the_metadata(tiny):
    block = Block.load(tiny["mlp"]["block"])
    data = torch.load(tiny["mlp"]["folder"] / "data" / "iid.pt")
    logits = block(x=data["x"].numpy())["logits"]
    got = metric_value("accuracy", logits, data["y"].numpy())
    assert got == pytest.approx(block.meta("legoc.scores")["iid"]["metric_block"], abs=1e-12)


def test_float64_inputs_are_cast_to_the_blocks_float32(tiny):
    block = Block.load(tiny["mlp"]["block"])
    x = rows((4, 6))
    assert np.array_equal(block(x=x.astype(np.float64))["logits"], block(x=x)["logits"])


@pytest.mark.parametrize(
    "feeds, needles",
    [
        ({}, ("missing input 'x'", "float32[batch,6]")),
        ({"x": rows((2, 6)), "z": rows((2, 6))}, ("unknown input 'z'",)),
        ({"x": rows((2, 5))}, ("input 'x' has shape (2, 5)", "expects float32[batch,6]")),
        ({"x": rows((2, 6))[None]}, ("input 'x' has shape (1, 2, 6)",)),
        ({"x": np.ones((2, 6), np.int64)}, ("input 'x' is int64", "float32[batch,6]")),
    ],
)
def test_bad_inputs_name_the_input_and_what_the_block_expects(tiny, feeds, needles):
    block = Block.load(tiny["mlp"]["block"])
    with pytest.raises(LegocError) as info:
        block(**feeds)
    for needle in needles:
        assert needle in str(info.value)


def test_missing_and_non_onnx_files_are_refused(tmp_path):
    with pytest.raises(LegocError, match="file not found"):
        Block.load(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 not a protobuf at all \xff" * 10)
    with pytest.raises(LegocError, match="not an ONNX model"):
        Block.load(junk)


def test_any_onnx_model_loads_even_without_legoc_metadata(tmp_path):
    block = Block.load(save_linear(tmp_path / "lin.onnx", 3, 2))
    assert block.task is None and block.metadata == {}
    out = block(x=rows((5, 3)))["logits"]
    assert out.shape == (5, 2)
