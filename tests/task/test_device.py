"""`--device`: cpu and auto run everywhere; a device that is absent or too small is one error
line (exit 2); the same seed on the CPU writes the same block, byte for byte."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from legoc.cli.app import app
from legoc.errors import LegocError
from legoc.task.device import check_fits, resolve_device
from tests.helpers import assert_one_error_line

runner = CliRunner()


def gpu(test):
    """Marked `gpu`; runs only where torch sees a CUDA device."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    return pytest.mark.gpu(skip(test))


def _extract(task, out, *extra):
    args = ["extract", str(task["model"]), "--task", str(task["spec"]), "-o", str(out)]
    return runner.invoke(app, [*args, "--arch", task["arch"], "--budget", "40", *extra])


def test_cpu_runs_twice_to_the_same_bytes_and_auto_agrees_on_a_cpu_machine(mlp_task, tmp_path):
    first, second, auto = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "auto.onnx"
    for out, device in ((first, "cpu"), (second, "cpu"), (auto, "auto")):
        result = _extract(mlp_task, out, "--device", device)
        assert result.exit_code == 0, result.output
    assert first.read_bytes() == second.read_bytes()
    if not torch.cuda.is_available():  # auto is the cpu here
        assert auto.read_bytes() == first.read_bytes()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_error_line(mlp_task, tmp_path):
    result = _extract(mlp_task, tmp_path / "block.onnx", "--device", "cuda")
    assert_one_error_line(result, ("--device cuda", "no CUDA device", "--device cpu"))
    assert not (tmp_path / "block.onnx").exists()


def test_an_unknown_device_is_one_error_line(mlp_task, tmp_path):
    result = _extract(mlp_task, tmp_path / "block.onnx", "--device", "tpu")
    assert_one_error_line(result, ("--device 'tpu'", "cpu, cuda, mps"))


def test_a_model_larger_than_the_free_memory_names_both_sizes():
    with pytest.raises(
        LegocError, match=r"needs 3\.00 GiB .* plus 0\.50 GiB .* has 2\.00 GiB free"
    ):
        check_fits(3 << 30, 1 << 29, torch.device("cuda"), 2 << 30)
    check_fits(1 << 30, 1 << 29, torch.device("cuda"), 2 << 30)  # fits: no error
    check_fits(1 << 40, 0, torch.device("cpu"), None)  # the CPU: loaded already


def test_auto_is_cuda_exactly_when_torch_sees_one():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@gpu
def test_cuda_block_keeps_the_cpu_blocks_units_or_is_as_faithful(mlp_task, tmp_path):
    import json

    outs = {}
    for device in ("cpu", "cuda"):
        result = _extract(mlp_task, tmp_path / f"{device}.onnx", "--device", device, "--json")
        assert result.exit_code == 0, result.output
        outs[device] = json.loads(result.stdout.strip().splitlines()[-1])
    if outs["cuda"]["units_kept"] != outs["cpu"]["units_kept"]:  # a borderline flip
        assert outs["cuda"]["faithfulness"] >= 0.9  # the spec's keep
