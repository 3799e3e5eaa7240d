"""The `legoc` console script: block commands never import torch (checked with
`python -X importtime`), and without torch the compiler commands say how to install it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.runtime.helpers import save_linear


def legoc(*args: str, block_torch: bool = False, importtime: bool = False):
    """Run the console script's main in a fresh interpreter (torch made unimportable on ask)."""
    code = textwrap.dedent(
        f"""
        import sys
        if {block_torch!r}:
            sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from legoc.cli.main import main
        main({list(args)!r})
        """
    )
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run(
        [sys.executable, *flags, "-c", code], capture_output=True, text=True, timeout=300
    )


def imported(stderr: str) -> set[str]:
    """Top-level package names from `-X importtime` lines (typer itself may import pydantic)."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.fixture
def block(tmp_path):
    path = save_linear(tmp_path / "lin.onnx", 6, 4, task="lin")
    np.savez(tmp_path / "x.npz", x=np.ones((3, 6), np.float32))
    return path


def test_block_commands_import_no_torch(block, tmp_path):
    commands = [
        ("run", str(block), str(tmp_path / "x.npz")),
        ("card", str(block), "-o", str(tmp_path / "card.md")),
        ("compose", "parallel", str(block), str(block), "-o", str(tmp_path / "two.onnx")),
        ("deploy", str(block), "--target", "ort", "-o", str(tmp_path / "dep"), "--runs", "1"),
        ("catalog", "add", str(tmp_path / "cat"), str(block)),
    ]
    for command in commands:
        done = legoc(*command, importtime=True)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        names = imported(done.stderr)
        assert "onnxruntime" in names or command[0] == "catalog" or "onnx" in names
        assert not names & {"torch", "safetensors", "transformers", "legoc.api"}, command


def test_block_commands_work_where_torch_cannot_be_imported(block, tmp_path):
    done = legoc("run", str(block), str(tmp_path / "x.npz"), block_torch=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("logits: float32[3,4]")


def test_without_torch_compiler_commands_say_how_to_install_it(block):
    done = legoc("extract", "m.pt", "--task", "t.yaml", "-o", "b.onnx", block_torch=True)
    assert done.returncode == 2
    assert "legoc extract needs the compiler (torch)" in done.stderr
    assert "pip install 'legoc[compiler]'" in done.stderr
    helped = legoc("--help", block_torch=True)
    assert helped.returncode == 0
    for command in ("run", "compose", "deploy", "catalog", "card"):
        assert command in helped.stdout
    assert "legoc[compiler]" in helped.stdout


def test_with_torch_every_command_is_there():
    done = legoc("--help")
    assert done.returncode == 0
    for command in ("extract", "inspect", "compare", "baseline", "run", "deploy", "catalog"):
        assert command in done.stdout
