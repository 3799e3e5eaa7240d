"""Model files to modules (DESIGN §3.1): formats detected by content, the safe state-dict forms,
`--arch` factories, and torch.fx tracing errors that say where and how to fix them."""

from __future__ import annotations

import textwrap
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from legoc.errors import LegocError
from legoc.frontend.load import detect_format, load_factory, load_model, trace
from tests.helpers import ARCH, trained_model, trained_state


def write_torchscript(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still used
        torch.jit.save(torch.jit.script(trained_model("mlp")), str(path))


def write_exported_program(path: Path) -> None:
    torch.export.save(torch.export.export(trained_model("mlp"), (torch.zeros(2, 6),)), str(path))


def write_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a model")


# File names deliberately disagree with the content: detection must read the bytes.
WRITERS = {
    "state-dict-zip": ("model.onnx", lambda p: torch.save(trained_state("mlp"), p), "zip-torch"),
    "state-dict-legacy": (
        "model.pt",
        lambda p: torch.save(trained_state("mlp"), p, _use_new_zipfile_serialization=False),
        "pickle",
    ),
    "whole-module": ("model.bin", lambda p: torch.save(trained_model("mlp"), p), "zip-torch"),
    "safetensors": ("model.pt", lambda p: save_file(trained_state("mlp"), str(p)), "safetensors"),
    "torchscript": ("model.safetensors", write_torchscript, "torchscript"),
    "exported-program": ("model.pt", write_exported_program, "exported-program"),
    "garbage": ("model.pt", lambda p: p.write_bytes(b"hello, not a model at all"), "unknown"),
    "other-zip": ("model.pt", write_zip, "unknown"),
    "truncated-zip": (
        "model.pt",
        lambda p: (torch.save(trained_state("mlp"), p), p.write_bytes(p.read_bytes()[:200])),
        "unknown",
    ),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_detect_format_reads_content_not_extension(tmp_path, writer):
    name, write, expected = WRITERS[writer]
    path = tmp_path / name
    write(path)
    assert detect_format(path) == expected


def assert_same_weights(module: torch.nn.Module, kind: str) -> None:
    expected = trained_state(kind)
    got = module.state_dict()
    assert sorted(got) == sorted(expected)
    for key, tensor in expected.items():
        assert torch.equal(got[key], tensor), key


def test_safetensors_state_dict_with_arch(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(trained_state("cnn"), str(path))
    loaded = load_model(path, arch=ARCH["cnn"])
    assert loaded.kind == "safetensors"
    assert not loaded.module.training, "models load in eval mode (BatchNorm uses running stats)"
    assert_same_weights(loaded.module, "cnn")
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), trained_model("cnn")(x), rtol=0, atol=0)


def test_safetensors_without_arch_asks_for_it(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(trained_state("mlp"), str(path))
    with pytest.raises(LegocError, match=r"is a state dict: pass --arch package\.module:factory"):
        load_model(path)


def test_truncated_safetensors_is_corrupt(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(trained_state("mlp"), str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(LegocError, match=r"corrupt safetensors file"):
        load_model(path, arch=ARCH["mlp"])


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_save_state_dict_with_arch(tmp_path, legacy):
    path = tmp_path / "model.pt"
    torch.save(trained_state("mlp"), path, _use_new_zipfile_serialization=not legacy)
    loaded = load_model(path, arch=ARCH["mlp"])
    assert_same_weights(loaded.module, "mlp")
    assert not loaded.module.training


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_save_state_dict_is_reported_as_state_dict(tmp_path, legacy):
    path = tmp_path / "model.pt"
    torch.save(trained_state("mlp"), path, _use_new_zipfile_serialization=not legacy)
    assert load_model(path, arch=ARCH["mlp"]).kind == "state-dict"


def test_pickled_module_with_trust_is_reported_as_pickled_module(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(trained_model("mlp"), path)
    loaded = load_model(path, trust_model=True)
    assert loaded.kind == "pickled-module"
    assert_same_weights(loaded.module, "mlp")


ARCH_FILE = """\
import torch
from torch import nn


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


def make():
    return Branchy()


not_callable = 3
"""


@pytest.fixture
def arch_file(tmp_path) -> Path:
    path = tmp_path / "my_arch.py"
    path.write_text(textwrap.dedent(ARCH_FILE))
    return path


def test_load_factory_from_a_file_path(arch_file):
    factory = load_factory(f"{arch_file}:make")
    module = factory()
    assert type(module).__name__ == "Branchy"
    assert [name for name, _ in module.named_modules()] == ["", "fc"]


DATACLASS_ARCH = """\
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class Config:
    width: int = 8


def make():
    return nn.Linear(6, Config().width)
"""


def test_load_factory_from_a_file_using_dataclasses(tmp_path):
    path = tmp_path / "dc_arch.py"
    path.write_text(DATACLASS_ARCH)
    module = load_factory(f"{path}:make")()
    assert module.out_features == 8


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("{folder}/missing.py:make", r"file .*missing\.py not found"),
        ("{file}:nope", r"has no callable named 'nope'"),
        ("{file}:not_callable", r"has no callable named 'not_callable'"),
        ("{file}", r"expected 'package\.module:factory' or 'file\.py:factory'"),
    ],
)
def test_load_factory_errors_name_the_reference(arch_file, ref, expected):
    ref = ref.format(folder=arch_file.parent, file=arch_file)
    with pytest.raises(LegocError, match=r"^--arch .*" + expected):
        load_factory(ref)


def test_trace_with_data_dependent_control_flow_names_the_line(arch_file):
    module = load_factory(f"{arch_file}:make")()
    line = 1 + arch_file.read_text().splitlines().index("        if x.sum() > 0:")
    with pytest.raises(LegocError) as info:
        trace(module, ["x"])
    message = str(info.value)
    assert message.startswith("torch.fx cannot trace the model: ")
    assert f"my_arch.py:{line} in forward" in message
    assert "remove data-dependent Python control flow from forward" in message
    assert "\n" not in message


def test_trace_opens_linear_into_functional_calls_on_weights():
    gm = trace(trained_model("mlp"), ["x"])
    calls = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert calls.count(F.linear) == 3
    params = sorted(n.target for n in gm.graph.nodes if n.op == "get_attr")
    assert params == sorted(trained_state("mlp"))
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(gm(x), trained_model("mlp")(x), rtol=0, atol=0)
