"""ORT format for mobile runtimes: onnxruntime's converter writes the `.ort` model and the
reduced-operator config that a minimal onnxruntime build is compiled with."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

from legoc.errors import LegocError

CONVERTER = "onnxruntime.tools.convert_onnx_models_to_ort"


def to_ort_format(source: Path, out_dir: Path, timeout: float = 600) -> tuple[Path, Path]:
    """Convert one .onnx file to (`STEM.ort`, `STEM.required_operators.config`) in out_dir.

    Optimization style Fixed (optimizations baked in, no target platform given, so the
    converter leaves out the x86-only NCHWc layout and the model runs on ARM too)."""
    if importlib.util.find_spec(CONVERTER) is None:
        raise LegocError(
            f"the mobile target needs {CONVERTER}, which this onnxruntime does not ship; "
            "install the full onnxruntime package"
        )
    with tempfile.TemporaryDirectory(prefix="legoc-ort-") as tmp:
        model = Path(tmp) / f"{source.stem}.onnx"
        model.write_bytes(source.read_bytes())  # alone in a folder: the tool converts them all
        command = [
            sys.executable,
            "-m",
            CONVERTER,
            str(model),
            "--output_dir",
            str(out_dir),
            "--optimization_style",
            "Fixed",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    ort_path = out_dir / f"{source.stem}.ort"
    config = out_dir / f"{source.stem}.required_operators.config"
    if done.returncode != 0 or not ort_path.is_file() or not config.is_file():
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise LegocError(
            f"ORT format conversion failed: {lines[-1] if lines else 'no output'}; "
            "deploy with --target ort instead"
        )
    return ort_path, config
