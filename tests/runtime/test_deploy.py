"""Deploy: the ORT, int8 and mobile targets, the report (size, latency at batch 1 and 64,
scores per split before and after), and int8 top-1 agreement with fp32 on the shapes example."""

from __future__ import annotations

import collections
import json
import os
import re

import onnx
import pytest

from legoc.errors import LegocError
from legoc.runtime import Block, deploy
from legoc.runtime.data import read_arrays
from tests.runtime.helpers import SHAPES

FAST = dict(warmup=1, runs=3)


def ops(path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_ort_target_copies_the_block_and_reports_it(tiny, tmp_path):
    report = deploy(tiny["mlp"]["block"], "ort", tmp_path / "out", task=tiny["mlp"]["spec"], **FAST)
    assert sorted(os.listdir(tmp_path / "out")) == ["mlp.onnx", "report.json"]
    assert report.before.bytes == report.after.bytes
    assert set(report.before.latency_ms) == {"1", "64"}
    assert all(v > 0 for v in report.after.latency_ms.values())
    assert report.before.scores == report.after.scores
    assert set(report.after.scores) == {"search", "iid"}
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["after"]["scores"] == report.after.scores and saved["target"] == "ort"


def test_fp32_scores_are_the_compilers_block_scores(tiny, tmp_path):
    block = Block.load(tiny["cnn"]["block"])
    report = deploy(tiny["cnn"]["block"], "ort", tmp_path / "out", task=tiny["cnn"]["spec"], **FAST)
    recorded = block.meta("legoc.scores")
    for split, value in report.before.scores.items():
        assert value == pytest.approx(recorded[split]["metric_block"], abs=1e-12)


def test_int8_without_a_task_is_dynamic_and_has_no_scores(tiny, tmp_path):
    report = deploy(tiny["mlp"]["block"], "ort-int8", tmp_path / "out", **FAST)
    assert report.quantization["mode"] == "dynamic"
    assert report.files == ["mlp.int8.onnx"] and report.after.scores == {}
    counts = ops(tmp_path / "out" / "mlp.int8.onnx")
    assert counts["MatMulInteger"] == 3 and counts["Gemm"] == 0


def test_int8_with_a_task_is_static_qdq_calibrated_on_search(tiny, tmp_path):
    report = deploy(
        tiny["cnn"]["block"], "ort-int8", tmp_path / "out", task=tiny["cnn"]["spec"], **FAST
    )
    assert report.quantization["mode"] == "static"
    assert report.quantization["calibration_rows"] == 128  # the whole search split
    counts = ops(tmp_path / "out" / "cnn.int8.onnx")
    assert counts["QuantizeLinear"] > 0 and counts["DequantizeLinear"] > 0
    assert set(report.after.scores) == {"search", "iid"}
    assert not [p for p in os.listdir(tmp_path / "out") if p.startswith(".")]


def test_mobile_target_writes_ort_format_and_its_operator_config(tiny, tmp_path):
    report = deploy(
        tiny["cnn"]["block"], "ort-mobile", tmp_path / "out", task=tiny["cnn"]["spec"], **FAST
    )
    assert report.files == ["cnn.ort", "cnn.required_operators.config"]
    config = (tmp_path / "out" / "cnn.required_operators.config").read_text()
    assert "ai.onnx;" in config and "Gemm" in config
    assert (tmp_path / "out" / "cnn.ort").read_bytes()[4:8] == b"ORTM"
    assert report.after.scores == report.before.scores


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(target="tflite"), "--target 'tflite'"),
        (dict(target="ort", quant="static"), "--quant static applies to --target ort-int8"),
        (dict(target="ort-int8", quant="static"), "needs calibration data: pass --task"),
        (dict(target="ort-int8", quant="fp8"), "--quant 'fp8'"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(tiny, tmp_path, kwargs, needle):
    with pytest.raises(LegocError, match=re.escape(needle)):
        deploy(tiny["mlp"]["block"], out_dir=tmp_path / "out", **kwargs, **FAST)
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_a_spec_of_another_task_is_refused(tiny, tmp_path):
    with pytest.raises(LegocError, match="is task 'tiny-cnn' but .* was extracted for 'tiny-mlp'"):
        deploy(tiny["mlp"]["block"], "ort", tmp_path / "out", task=tiny["cnn"]["spec"], **FAST)


def test_shapes_int8_predictions_agree_with_fp32(shapes_block, tmp_path):
    # int8 kernels differ by instruction set (VNNI, AVX-512, AVX2 round differently), so the
    # accuracy of one split can move by a few rows from CPU to CPU; what static quantization
    # does promise is the same top-1 answer as fp32 on nearly every row. 1,200 rows over the
    # three splits: one row is 0.08 points, and 97% leaves room for 36 flips (0.99 seen on AVX2).
    report = deploy(shapes_block, "ort-int8", tmp_path / "out", task=SHAPES / "task.yaml", **FAST)
    assert report.quantization["mode"] == "static"
    assert set(report.before.scores) == set(report.after.scores) == {"search", "iid", "sketch"}
    fp32, int8 = Block.load(shapes_block), Block.load(tmp_path / "out" / report.files[0])
    same = rows = 0
    for split in ("search", "iid", "sketch"):
        x = read_arrays(SHAPES / "data" / f"{split}.pt")["x"]
        same += int((fp32(x=x)["logits"].argmax(-1) == int8(x=x)["logits"].argmax(-1)).sum())
        rows += len(x)
    assert rows == 1200 and same / rows >= 0.97, (same, rows, report.to_dict())
    assert report.after.bytes <= 0.35 * report.before.bytes
