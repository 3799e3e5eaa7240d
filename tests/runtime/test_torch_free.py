"""`legoc.runtime` never imports torch: loading and running a block, composing, deploying with
.npz task data, the catalogue and cards all work in a process where torch cannot be imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import torch
import yaml


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


def test_importing_and_running_a_block_never_imports_torch(tiny):
    """Nor anything else beyond onnx, onnxruntime and numpy (and legoc's own runtime)."""
    done = python(
        f"""
        import sys, numpy as np, legoc.runtime as r
        b = r.Block.load({str(tiny["mlp"]["block"])!r})
        out = b(x=np.zeros((3, 6), np.float32))
        assert out["logits"].shape == (3, 4)
        assert "torch" not in sys.modules, "torch was imported"
        others = ["yaml", "matplotlib", "pydantic", "typer", "rich", "legoc.api", "legoc.task"]
        assert not [m for m in others if m in sys.modules], [m for m in others if m in sys.modules]
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def npz_task(task: dict, folder) -> str:
    """The tiny task's spec with its data files converted to .npz."""
    folder.mkdir()
    spec = yaml.safe_load(task["spec"].read_text())
    for split in ("search", "iid"):
        data = torch.load(task["folder"] / "data" / f"{split}.pt")
        np.savez(folder / f"{split}.npz", **{k: v.numpy() for k, v in data.items()})
    spec["data"] = {"search": "search.npz", "eval": {"iid": "iid.npz"}}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return str(folder / "spec.yaml")


def test_the_whole_runtime_works_where_torch_cannot_be_imported(tiny, tmp_path):
    spec = npz_task(tiny["cnn"], tmp_path / "task")
    block = str(tiny["cnn"]["block"])
    done = python(
        f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import legoc.runtime as r
        b = r.Block.load({block!r})
        c = r.compose_parallel([b, b], concat=True)
        c.check()
        c.save({str(tmp_path / "pair.onnx")!r})
        report = r.deploy({block!r}, "ort-int8", {str(tmp_path / "dep")!r}, task={spec!r})
        assert report.quantization["mode"] == "static", report.quantization
        assert set(report.after.scores) == {{"search", "iid"}}
        cat = r.Catalog({str(tmp_path / "cat")!r})
        cat.add({str(tmp_path / "pair.onnx")!r})
        cat.verify()
        r.write_card({str(tmp_path / "pair.onnx")!r})
        assert sys.modules["torch"] is None
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
