"""`legoc deploy`: a block as onnxruntime will run it (fp32, int8 or ORT format for mobile),
with a report of file size, latency at batch 1 and 64, and score per split before and after."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

import legoc
from legoc.errors import LegocError
from legoc.runtime.block import Block, make_session
from legoc.runtime.files import (
    check_not_an_input,
    check_replaceable,
    move_into,
    staging_folder,
)
from legoc.runtime.mobile import to_ort_format
from legoc.runtime.quantize import quantize
from legoc.runtime.scores import Split, load_split, logits_of, metric_value, read_task
from legoc.runtime.timing import BATCHES, RUNS, WARMUP, batch_of, latency_ms

log = logging.getLogger(__name__)

TARGETS = ("ort", "ort-int8", "ort-mobile", "web")
QUANT_MODES = ("auto", "static", "dynamic")


@dataclass
class Measured:
    """One model file as deployed: size, latency per batch size, metric per split."""

    file: str
    bytes: int
    latency_ms: dict[str, float]
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class DeployReport:
    target: str
    block: str
    out_dir: str
    files: list[str]
    metric: str | None
    quantization: dict | None
    threads: int
    warmup: int
    runs: int
    before: Measured
    after: Measured
    notes: list[str] = field(default_factory=list)
    legoc_version: str = legoc.__version__

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """The report as aligned text: fp32 block against the deployed file."""
        b, a = self.before, self.after
        rows = [("", "fp32 block", self.target, "after/before")]
        rows.append(
            ("file size (bytes)", f"{b.bytes:,}", f"{a.bytes:,}", f"{a.bytes / b.bytes:.3f}")
        )
        for batch in b.latency_ms:
            lb, la = b.latency_ms[batch], a.latency_ms[batch]
            rows.append((f"latency b={batch} (ms)", f"{lb:.3f}", f"{la:.3f}", f"{la / lb:.3f}"))
        for split in b.scores:
            sb, sa = b.scores[split], a.scores[split]
            rows.append((f"{self.metric} {split}", f"{sb:.4f}", f"{sa:.4f}", f"{sa - sb:+.4f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join(lines)


def deploy(
    block_path: str | Path,
    target: str,
    out_dir: str | Path,
    task: str | Path | None = None,
    quant: str = "auto",
    threads: int = 1,
    warmup: int = WARMUP,
    runs: int = RUNS,
    progress: Callable[[str, int, int], None] | None = None,
    web_format: str = "auto",
    ort_web: str | Path | None = None,
) -> DeployReport:
    """Write the deployed block and report.json into `out_dir`; files move in only at the end.

    Without `task` there is no calibration data (int8 is dynamic) and no scores. The web
    target returns a `legoc.runtime.web.WebReport` (its latency is the browser's to measure)."""
    if target not in TARGETS:
        raise LegocError(f"--target {target!r}: use one of {list(TARGETS)}")
    if quant not in QUANT_MODES:
        raise LegocError(f"--quant {quant!r}: use one of {list(QUANT_MODES)}")
    if quant != "auto" and target != "ort-int8":
        raise LegocError(f"--quant {quant} applies to --target ort-int8 only")
    if target == "web":
        from legoc.runtime.web import deploy_web

        return deploy_web(  # type: ignore[return-value]
            block_path, out_dir, task, web_format, ort_web, threads, warmup, runs
        )

    def step(done: int) -> None:
        if progress is not None:
            progress(f"deploy {target}", done, 4)

    block_path = Path(block_path)
    out_dir = Path(out_dir)
    stem = block_path.stem
    reads = {"the block": block_path, "the task spec": task}
    block = Block.load(block_path, threads=threads)
    splits, metric = _task_splits(block, task, reads) if task is not None else ({}, None)
    for name in _deployed_names(target, stem):
        check_replaceable(out_dir / name)
        check_not_an_input(out_dir / name, reads)
    notes: list[str] = []
    step(1)
    with staging_folder(out_dir) as stage:
        fp32 = stage / f"{stem}.onnx"
        onnx.save(block.model, str(fp32))  # external data embedded: the copy stands alone
        quantization = None
        if target == "ort":
            files = [fp32]
        elif target == "ort-int8":
            mode = quant if quant != "auto" else ("static" if splits else "dynamic")
            calibration = splits["search"].inputs if "search" in splits else None
            artifact = stage / f"{stem}.int8.onnx"
            quantization = quantize(fp32, artifact, mode, calibration)
            files = [artifact]
            if mode == "dynamic":
                notes.append("dynamic int8: Conv layers stay fp32 (ConvInteger is slower on CPU)")
        else:
            ort_dir = stage / "ort"
            ort_dir.mkdir()
            files = list(to_ort_format(fp32, ort_dir))
            notes.append(
                "ORT format without the x86-only NCHWc layout, so it runs on ARM too; on x86 its "
                "latency can differ from the fp32 .onnx, which onnxruntime lays out at load time"
            )
        after_model: bytes | str = (
            str(files[0]) if files[0].suffix == ".ort" else files[0].read_bytes()
        )
        step(2)
        sample = splits["search"].inputs if "search" in splits else None
        measure = dict(
            block=block,
            splits=splits,
            metric=metric,
            sample=sample,
            threads=threads,
            warmup=warmup,
            runs=runs,
        )
        before, fp32_logits = _measure(block.model.SerializeToString(), fp32, **measure)
        step(3)
        after, _ = _measure(after_model, files[0], reference=fp32_logits, **measure)
        step(4)
        report = DeployReport(
            target=target,
            block=str(block_path),
            out_dir=str(out_dir),
            files=[f.name for f in files],
            metric=metric,
            quantization=quantization,
            threads=threads,
            warmup=warmup,
            runs=runs,
            before=before,
            after=after,
            notes=notes,
        )
        (stage / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        for path in [*files, stage / "report.json"]:
            move_into(path, out_dir, reads)
    return report


def _deployed_names(target: str, stem: str) -> list[str]:
    """The files a deployment puts into its folder (checked before any work)."""
    names = {
        "ort": [f"{stem}.onnx"],
        "ort-int8": [f"{stem}.int8.onnx"],
        "ort-mobile": [f"{stem}.ort", f"{stem}.required_operators.config"],
    }
    return [*names[target], "report.json"]


def _task_splits(block: Block, task: str | Path, reads: dict) -> tuple[dict[str, Split], str]:
    data = read_task(task)
    for name, path in data.splits.items():  # no deployed file may replace the task's data
        reads["data.search" if name == "search" else f"data.eval.{name}"] = path
    expected = block.metadata.get("legoc.spec_sha256")
    name = block.task
    if expected != data.sha256 and name is not None and name != data.name:
        raise LegocError(
            f"--task {task}: it is task '{data.name}' but {block.label} was extracted for "
            f"'{name}'; pass the block's own spec"
        )
    metric = data.metric
    splits = {}
    for split, path in data.splits.items():
        label = "data.search" if split == "search" else f"data.eval.{split}"
        loaded = load_split(split, path, block.input_names, label)
        loaded.inputs = block.feeds(loaded.inputs, f"{label} {path}")  # shapes, dtypes fit
        splits[split] = loaded
    return splits, metric


def _measure(
    model: bytes | str,
    path: Path,
    block: Block,
    splits: dict[str, Split],
    metric: str | None,
    sample: dict[str, np.ndarray] | None,
    threads: int,
    warmup: int,
    runs: int,
    reference: dict[str, np.ndarray] | None = None,
) -> tuple[Measured, dict[str, np.ndarray]]:
    """Size, latency and scores of one model; returns its logits per split too. For the kl
    metric the reference is the fp32 block's logits (so the fp32 block scores 0)."""
    session = make_session(model, threads, path.name)
    first = block.output_names[0]

    def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
        return session.run([first], inputs)[0]

    latency = {
        str(n): latency_ms(session, batch_of(block.inputs, n, sample), warmup, runs)
        for n in BATCHES
    }
    scores, logits = {}, {}
    for name, split in splits.items():
        logits[name] = logits_of(run, split)
        ref = None
        if metric == "kl":
            ref = logits[name] if reference is None else reference[name]
        scores[name] = metric_value(metric, logits[name], split.y, ref, split.y_alt)
    return Measured(path.name, path.stat().st_size, latency, scores), logits
