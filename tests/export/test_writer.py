"""The block contract (DESIGN §3.3) on blocks extracted from each tiny model: the ONNX checker,
input/output names and dynamic batch, onnxruntime parity with the masked torch model, metadata,
and byte-identical re-extraction."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from onnx import numpy_helper
from torch import nn

import legoc
from legoc import api
from legoc.scoring.scorer import instrument
from tests.helpers import FACTORIES, INPUT_SHAPES, trained_model, write_task

CASES = {  # case id -> (kind, outputs)
    "mlp": ("mlp", None),
    "cnn": ("cnn", None),
    "planted": ("planted", None),
    "cnn-outputs": ("cnn", [0, 3]),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def block(request, tmp_path_factory):
    """One extraction per case, shared by the tests of this module."""
    kind, outputs = CASES[request.param]
    task = write_task(tmp_path_factory.mktemp(request.param), kind, outputs=outputs)
    path = task["folder"] / "block.onnx"
    result = api.extract(task["model"], task["spec"], path, arch=task["arch"])
    model = onnx.load(str(path))
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    return {
        "case": request.param,
        "kind": kind,
        "outputs": outputs,
        "task": task,
        "path": path,
        "result": result,
        "model": model,
        "metadata": metadata,
        "rationale": json.loads(metadata["legoc.rationale"]),
    }


def dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def masked_reference(block) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The oracle: the task's IR with the metadata's kept units and the search split's mean
    ablation applied by legoc.scoring.scorer.instrument; and the same graph with every unit kept."""
    task = block["task"]
    prep = api.prepare(task["model"], task["spec"], arch=task["arch"])
    masked, ablates = instrument(prep.ir)
    full, full_ablates = instrument(prep.ir)
    rationale = block["rationale"]
    assert set(ablates) == set(rationale["kept"])
    for name, module in ablates.items():
        keep = np.zeros(rationale["total"][name], dtype=bool)
        keep[rationale["kept"][name]] = True
        module.set(torch.from_numpy(keep), prep.scorer.values[name])
        full_ablates[name].set(torch.ones(len(keep), dtype=torch.bool), prep.scorer.values[name])
    return masked.eval(), full.eval()


def test_block_passes_full_onnx_checker(block):
    onnx.checker.check_model(block["model"], full_check=True)


def test_inputs_are_forward_arguments_with_dynamic_batch(block):
    inputs = block["model"].graph.input
    assert [i.name for i in inputs] == ["x"]
    batch, *rest = dims(inputs[0])
    assert isinstance(batch, str) and batch, "batch axis must be symbolic"
    assert tuple(rest) == INPUT_SHAPES[block["kind"]]


def test_single_logits_output_restricted_to_outputs(block):
    outputs = block["model"].graph.output
    assert [o.name for o in outputs] == ["logits"]
    batch, width = dims(outputs[0])
    assert isinstance(batch, str) and batch
    with torch.no_grad():
        full_width = trained_model(block["kind"])(torch.zeros(1, *INPUT_SHAPES[block["kind"]]))
    full_width = full_width.shape[-1]
    assert width == (len(block["outputs"]) if block["outputs"] else full_width)


def test_onnxruntime_agrees_with_masked_torch_model(block):
    masked, full = masked_reference(block)
    folder = block["task"]["folder"] / "data"
    search = torch.load(folder / "search.pt", weights_only=True)
    iid = torch.load(folder / "iid.pt", weights_only=True)
    session = ort.InferenceSession(str(block["path"]), providers=["CPUExecutionProvider"])
    for x in (search["x"][:1], iid["x"][:7]):
        (got,) = session.run(["logits"], {"x": x.numpy()})
        with torch.no_grad():
            expected = masked(x).numpy()
        assert got.shape == expected.shape == (x.shape[0], expected.shape[-1])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    with torch.no_grad():
        masked_out, full_out = masked(search["x"]), full(search["x"])
    # the oracle discriminates: removing units visibly changed the model's outputs
    assert float((masked_out - full_out).abs().max()) > 1e-3
    # and the metadata's mask is the one that reached the reported faithfulness
    accuracy = (masked_out.argmax(-1) == search["y"]).float().mean().item()
    full_accuracy = (full_out.argmax(-1) == search["y"]).float().mean().item()
    assert accuracy / full_accuracy == pytest.approx(block["rationale"]["faithfulness"], abs=1e-9)


def test_metadata_names_version_task_and_source(block):
    metadata = block["metadata"]
    assert metadata["legoc.version"] == legoc.__version__
    assert metadata["legoc.task"] == f"tiny-{block['kind']}"
    model_bytes = block["task"]["model"].read_bytes()
    assert metadata["legoc.source_sha256"] == hashlib.sha256(model_bytes).hexdigest()


def test_metadata_records_versions_spec_hash_and_the_search(block):
    metadata = block["metadata"]
    spec_bytes = block["task"]["spec"].read_bytes()
    assert metadata["legoc.spec_sha256"] == hashlib.sha256(spec_bytes).hexdigest()
    versions = json.loads(metadata["legoc.versions"])
    assert versions["torch"] == torch.__version__
    assert versions["onnx"] == onnx.__version__
    assert versions["onnxruntime"] == ort.__version__
    search = json.loads(metadata["legoc.search"])
    assert search["seed"] == 0 and search["evaluations"] == block["result"].evaluations


def test_rationale_metadata(block):
    rationale = block["rationale"]
    assert {"kept", "total", "faithfulness", "params"} <= set(rationale)
    source = trained_model(block["kind"])
    prunable = {
        name: m.out_features if isinstance(m, nn.Linear) else m.out_channels
        for name, m in source.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    }
    assert rationale["total"] == prunable
    if block["kind"] == "mlp":
        assert rationale["total"]["fc1"] == 8
    assert set(rationale["kept"]) == set(prunable)
    for name, kept in rationale["kept"].items():
        assert kept == sorted(set(kept)), f"{name}: not ascending and distinct"
        assert all(0 <= i < prunable[name] for i in kept), name
    if block["outputs"]:  # the head's units the task reads are kept
        assert set(block["outputs"]) <= set(rationale["kept"]["fc2"])
    keep = yaml.safe_load(block["task"]["spec"].read_text())["keep"]
    assert rationale["faithfulness"] >= keep
    # the source's trainable parameters: BatchNorm statistics in its state dict are buffers
    source_params = sum(p.numel() for p in FACTORIES[block["kind"]]().parameters())
    assert rationale["params"]["source"] == source_params
    assert 0 < rationale["params"]["block"] < source_params


def test_initializers_hold_exactly_params_block(block, request):
    arrays = [numpy_helper.to_array(t) for t in block["model"].graph.initializer]
    stored = sum(a.size for a in arrays if np.issubdtype(a.dtype, np.floating))
    layout = json.loads(
        dict((p.key, p.value) for p in block["model"].metadata_props).get("legoc.layout", "null")
    )
    if layout is None:  # nothing padded: the file holds exactly the rationale
        assert stored == block["rationale"]["params"]["block"]
    else:  # aligned: the rationale plus the zero channels, as the layout says
        assert stored == layout["stored_params"] > block["rationale"]["params"]["block"]


def test_reextract_is_byte_identical(block):
    task = block["task"]
    again = task["folder"] / "again.onnx"
    api.extract(task["model"], task["spec"], again, arch=task["arch"])
    assert again.read_bytes() == block["path"].read_bytes()


def test_two_processes_write_byte_identical_blocks(tmp_path):
    """Same model, spec and seed in two fresh interpreters (own hash seeds, own allocators):
    the same bytes. Both run at once to keep the suite fast."""
    task = write_task(tmp_path / "task", "cnn")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    children = []
    for k, hash_seed in enumerate(["1", "2"]):
        argv = [
            sys.executable,
            "-c",
            "from legoc.cli.app import main; main()",
            "extract",
            str(task["model"]),
            "--task",
            str(task["spec"]),
            "--arch",
            task["arch"],
            "-o",
            str(tmp_path / f"block{k}.onnx"),
        ]
        children.append(
            subprocess.Popen(
                argv,
                cwd=root,
                env={**env, "PYTHONHASHSEED": hash_seed},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for child in children:
        _, stderr = child.communicate(timeout=300)
        assert child.returncode == 0, stderr
    assert (tmp_path / "block0.onnx").read_bytes() == (tmp_path / "block1.onnx").read_bytes()
