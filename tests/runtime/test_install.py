"""The runtime-only install: a fresh virtual environment with `pip install .` (no extras) has
no torch, and every block command runs on the shapes block there without importing it.

Slow (it installs numpy, onnx, onnxruntime and matplotlib into a new venv):
`pytest -m slow tests/runtime/test_install.py`."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
import yaml

from legoc.runtime.data import read_arrays
from tests.runtime.helpers import SHAPES, save_linear

REPO = Path(__file__).resolve().parents[2]


def npz_task(folder: Path) -> Path:
    """The shapes spec with its data as .npz (torch files need torch to read)."""
    folder.mkdir()
    spec = yaml.safe_load((SHAPES / "task.yaml").read_text())
    splits = {"search": "search.npz", "eval": {}}
    for split in ("search", "iid", "sketch"):
        np.savez(folder / f"{split}.npz", **read_arrays(SHAPES / "data" / f"{split}.pt"))
        if split != "search":
            splits["eval"][split] = f"{split}.npz"
    spec["data"] = splits
    (folder / "task.yaml").write_text(yaml.safe_dump(spec))
    return folder / "task.yaml"


@pytest.mark.slow
def test_a_runtime_only_venv_runs_every_block_command_without_torch(shapes_block, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "-c", str(REPO / "constraints.txt"), str(REPO)]
    subprocess.run(pip, check=True, timeout=1800)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run(
        [python, "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert probe.stdout.strip() == "None", "the runtime install pulled in torch"
    legoc = str(env_dir / "bin" / "legoc")
    spec = npz_task(tmp_path / "task")
    x = tmp_path / "x.npz"
    np.savez(x, x=read_arrays(SHAPES / "data" / "search.pt")["x"][:32])
    block, out = str(shapes_block), tmp_path
    head = save_linear(tmp_path / "head.onnx", 3, 2, task="head")  # logits[N,3] -> [N,2]
    commands = [
        ["run", block, str(x), "-o", str(out / "y.npz")],
        ["compose", "parallel", block, block, "-o", str(out / "pair.onnx"), "--concat"],
        ["compose", "sequential", block, str(head), "--map", "logits=x", "-o", str(out / "s.onnx")],
        ["deploy", block, "--target", "ort", "-o", str(out / "ort"), "--task", str(spec)],
        ["deploy", block, "--target", "ort-int8", "-o", str(out / "int8"), "--task", str(spec)],
        ["deploy", block, "--target", "ort-mobile", "-o", str(out / "mobile")],
        ["deploy", block, "--target", "web", "-o", str(out / "web"), "--task", str(spec)],
        ["card", block, "--format", "html", "-o", str(out / "card.html")],
        ["catalog", "add", str(out / "cat"), block],
        ["catalog", "add", str(out / "cat"), str(out / "pair.onnx")],
        ["catalog", "list", str(out / "cat")],
        ["catalog", "show", str(out / "cat"), "pair"],
        ["catalog", "search", str(out / "cat"), "--task", "shapes*"],
        ["catalog", "verify", str(out / "cat")],
        ["catalog", "site", str(out / "cat"), "--runs", "2"],
    ]
    for command in commands:
        done = subprocess.run(
            [python, "-X", "importtime", legoc, *command],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=900,
        )
        assert done.returncode == 0, (command, done.stderr[-3000:])
        assert "| torch" not in done.stderr and "torch." not in done.stderr, command
    helped = subprocess.run([legoc, "extract", "--help"], capture_output=True, text=True, env=env)
    assert helped.returncode == 2 and "legoc[compiler]" in helped.stderr
    assert (out / "cat" / "site" / "index.html").is_file()
    assert sys.prefix != str(env_dir)
