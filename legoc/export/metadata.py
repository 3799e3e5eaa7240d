"""The block's `metadata_props` (DESIGN §3.3) and the versions legoc ran with."""

from __future__ import annotations

import platform

import onnx
import onnxruntime
import torch

import legoc
from legoc.export.result import ExtractResult
from legoc.scoring.prepare import Prepared


def block_metadata(prep: Prepared, result: ExtractResult) -> dict:
    metadata = {
        "legoc.version": legoc.__version__,
        "legoc.task": prep.task.name,
        "legoc.source_sha256": prep.loaded.sha256,
        "legoc.spec_sha256": prep.task.sha256,
        "legoc.metric": prep.metric.name,
        "legoc.objective": prep.ir.objective,
        "legoc.inputs": prep.input_names,
        "legoc.rationale": {
            "kept": result.kept,
            "total": result.total,
            "faithfulness": result.faithfulness,
            "params": {"source": result.params_source, "block": result.params_block},
        },
        "legoc.scores": {name: vars(s) for name, s in result.scores.items()},
        "legoc.search": {
            "method": result.method,
            "evaluations": result.evaluations,
            "keep": prep.task.spec.keep,
            "seed": result.seed,
        },
        "legoc.versions": versions(),
    }
    if result.training is not None:
        metadata["legoc.training"] = result.training
    if result.layout is not None:
        metadata["legoc.layout"] = result.layout
    return metadata


def versions() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }
