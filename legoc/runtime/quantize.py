"""int8 quantization with onnxruntime's own tools: static (QDQ, calibrated on task data) or
dynamic (weights int8 ahead of time, activations quantized at run time)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx

from legoc.errors import LegocError

log = logging.getLogger(__name__)

CALIBRATION_ROWS = 1024
CALIBRATION_BATCH = 64
# Dynamic mode leaves Conv in fp32: onnxruntime runs it as ConvInteger, which on CPU is about
# 10x slower than the fp32 Conv (measured on the shapes block), so quantizing it never helps.
DYNAMIC_OPS = ["MatMul", "Gemm", "Attention", "LSTM"]


@contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer logs advice at WARNING on the root logger; keep our one-line output."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _calibration_reader(data: Mapping[str, np.ndarray], rows: int, batch: int):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            n = min(rows, len(next(iter(data.values()))))
            self.batches = iter(
                [{k: v[s : min(s + batch, n)] for k, v in data.items()} for s in range(0, n, batch)]
            )

        def get_next(self):
            return next(self.batches, None)

    return Reader()


def quantize(
    source: Path,
    target: Path,
    mode: str,
    calibration: Mapping[str, np.ndarray] | None = None,
) -> dict:
    """Write an int8 model of `source` to `target`; returns what was done (for the report)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode == "static" and not calibration:
        raise LegocError("--quant static needs calibration data: pass --task SPEC")
    work = target.with_suffix(".pre.onnx")
    with _quiet():
        try:
            quant_pre_process(str(source), str(work), skip_symbolic_shape=False)
        except Exception as exc:  # pre-processing is advice, not a requirement
            log.debug("quantization pre-processing skipped: %s", exc)
            shutil.copyfile(source, work)
        try:
            if mode == "static":
                rows = min(CALIBRATION_ROWS, len(next(iter(calibration.values()))))
                quantize_static(
                    str(work),
                    str(target),
                    _calibration_reader(calibration, rows, CALIBRATION_BATCH),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                )
                info = {
                    "mode": "static",
                    "format": "QDQ",
                    "per_channel": True,
                    "activations": "uint8",
                    "weights": "int8",
                    "calibration": "MinMax",
                    "calibration_rows": rows,
                }
            elif mode == "dynamic":
                quantize_dynamic(
                    str(work),
                    str(target),
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=DYNAMIC_OPS,
                )
                info = {"mode": "dynamic", "weights": "int8", "ops": DYNAMIC_OPS}
            else:
                raise LegocError(f"--quant {mode!r}: use auto, static or dynamic")
        except LegocError:
            raise
        except Exception as exc:  # unsupported graphs
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LegocError(
                f"int8 quantization ({mode}) failed: {first}; try --quant dynamic or the ort target"
            ) from None
        finally:
            work.unlink(missing_ok=True)
    try:
        onnx.checker.check_model(str(target))
    except onnx.checker.ValidationError as exc:
        raise LegocError(f"int8 quantization ({mode}) wrote an invalid model: {exc}") from None
    return info
