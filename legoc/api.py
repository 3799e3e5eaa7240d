"""The Python API behind the CLI: `extract` a block, `inspect` a model."""

from __future__ import annotations

import logging
import platform
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import onnx
import onnxruntime
import torch

import legoc
from legoc.checkpoint import checkpointed, run_header
from legoc.errors import LegocError, TaskNotMet
from legoc.export import export_block
from legoc.frontend import LoadedModel, forward_arg_names, load_model, trace
from legoc.ir import IR, build_ir, run_quietly
from legoc.masking import masked_model
from legoc.metrics import METRICS, Metric
from legoc.passes import (
    REWRITE_PASSES,
    REWRITE_PIPELINE,
    SEARCH_PASSES,
    AlignChannels,
    DeadCodeElimination,
    Finetune,
    Minimize,
    Repair,
    RoundWidths,
    run_pipeline,
)
from legoc.passes.align_channels import DEFAULT_MULTIPLE
from legoc.runtime.files import check_not_an_input, check_output_file, output_lock
from legoc.scoring import Scorer
from legoc.task import FinetuneSpec, Split, Task, check_seed, load_split, load_task
from legoc.training import TrainConfig, evaluate

log = logging.getLogger(__name__)


Progress = Callable[[str, int, int], None]  # (stage, done, total)
OBJECTIVES = ("params", "macs")  # what the search minimises (MACs: per input row)


@dataclass
class SplitScore:
    metric_full: float
    metric_block: float
    faithfulness: float


@dataclass
class ExtractResult:
    task: str
    output: str | None
    kept: dict[str, list[int]]
    total: dict[str, int]
    params_source: int
    params_block: int
    faithfulness: float
    scores: dict[str, SplitScore]
    evaluations: int
    method: str
    seconds: float
    parity_max_abs_diff: float | None
    one_minimal: bool
    keep: float = 0.0
    seed: int = 0
    passes: list[tuple[str, dict]] = field(default_factory=list)
    training: dict | None = None
    layout: dict | None = None  # what align-channels padded (legoc.layout)
    trace: list[dict] = field(default_factory=list, repr=False)
    replayed: int = 0  # evaluations answered from a checkpoint (--resume)
    paid: int = 0  # evaluations that ran the model

    @property
    def params_stored(self) -> int:
        """Float elements the block file stores: params.block plus any zero channels that
        channel alignment pads in for speed (those are not parameters)."""
        return (self.layout or {}).get("stored_params", self.params_block)

    def summary(self) -> dict:
        return {
            "task": self.task,
            "output": self.output,
            "units_kept": {name: f"{len(k)}/{self.total[name]}" for name, k in self.kept.items()},
            "params": {
                "source": self.params_source,
                "block": self.params_block,
                "stored": self.params_stored,
            },
            "faithfulness": round(self.faithfulness, 6),
            "scores": {
                name: {k: round(v, 6) for k, v in vars(s).items()}
                for name, s in self.scores.items()
            },
            "evaluations": self.evaluations,
            "method": self.method,
            "one_minimal": self.one_minimal,
            "seconds": round(self.seconds, 2),
            "parity_max_abs_diff": self.parity_max_abs_diff,
            "passes": {name: stats for name, stats in self.passes},
            "training": self.training,
            "layout": self.layout,
        }


@dataclass
class Prepared:
    """Everything loaded and checked before a search: model, task, data, IR, scorer."""

    loaded: LoadedModel
    task: Task
    metric: Metric
    input_names: list[str]
    splits: dict[str, Split]
    ir: IR
    scorer: Scorer
    eval_scorers: dict[str, Scorer] = field(default_factory=dict, repr=False)

    def scorer_for(self, split: str) -> Scorer:
        """The scorer of a split; eval splits reuse the search split's ablation values."""
        if split == "search":
            return self.scorer
        if split not in self.eval_scorers:
            self.eval_scorers[split] = Scorer(
                self.ir,
                self.splits[split],
                self.metric,
                values=self.scorer.values,
                label=f"data.eval.{split}",
                cache_bytes=0,  # a split scored once or twice: no prefix cache to pay for
            )
        return self.eval_scorers[split]

    def inputs(self) -> dict[str, Path]:
        """Every file the run reads, by label (an output must be none of them)."""
        files = {"the model": self.loaded.path, "the task spec": self.task.path}
        for name, path in self.task.split_paths().items():
            files["data.search" if name == "search" else f"data.eval.{name}"] = path
        return files


def _example_rows(split: Split) -> dict[str, torch.Tensor]:
    return {name: tensor[:2].clone() for name, tensor in split.inputs.items()}


def _check_outputs(
    gm: torch.fx.GraphModule, example: dict, input_names: list[str], outputs: list[int] | None
) -> None:
    if outputs is None:
        return
    try:
        out = run_quietly(gm, [example[n] for n in input_names])
    except Exception:  # noqa: BLE001 - shape problems are reported with context by build_ir
        return
    if isinstance(out, (tuple, list)):
        out = out[0]
    elif isinstance(out, dict):
        out = out.get("logits", next(iter(out.values())))
    width = out.shape[-1]
    bad = [i for i in outputs if i >= width]
    if bad:
        raise LegocError(
            f"outputs: indices {bad} are out of range for a model with {width} outputs"
        )


def _check_input_dtypes(module: torch.nn.Module, split: Split, name: str) -> None:
    """Floating inputs must have the weights' dtype: torch would only say 'mat1 and mat2 must
    have the same dtype' from deep inside the model."""
    weights = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
    label = "data.search" if name == "search" else f"data.eval.{name}"
    for arg, tensor in split.inputs.items():
        if weights is not None and tensor.is_floating_point() and tensor.dtype != weights:
            wanted = str(weights).replace("torch.", "")
            raise LegocError(
                f"{label}: input '{arg}' is {str(tensor.dtype).replace('torch.', '')} but the "
                f"model's weights are {wanted}; save the inputs as {wanted}"
            )


def prepare(
    model: str | Path,
    task_path: str | Path,
    arch: str | None = None,
    trust_model: bool = False,
    model_output: str | None = None,
) -> Prepared:
    task = load_task(task_path)
    loaded = load_model(model, arch=arch, trust_model=trust_model)
    metric = METRICS[task.spec.metric]
    input_names = forward_arg_names(loaded.module)
    splits = {}
    for name, path in task.split_paths().items():
        label = "data.search" if name == "search" else f"data.eval.{name}"
        splits[name] = load_split(name, path, input_names, label, metric.needs_labels)
    for split_name, split in splits.items():
        _check_input_dtypes(loaded.module, split, split_name)
    example = _example_rows(splits["search"])
    gm = trace(loaded.module, input_names, example, model_output)
    _check_outputs(gm, example, input_names, task.spec.outputs)
    try:
        ir = build_ir(gm, input_names, example, task.spec.outputs, task.spec.scope)
    except LegocError:
        raise
    except Exception as exc:  # noqa: BLE001 - shape propagation runs the model on the data
        shapes = {k: f"{tuple(v.shape[1:])} {str(v.dtype)[6:]}" for k, v in example.items()}
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LegocError(
            f"data.search: inputs (per row) {shapes} do not fit the model: {msg}"
        ) from None
    if task.spec.scope is not None and not ir.removable_groups():
        raise LegocError(
            f"scope: {task.spec.scope} matches no prunable module; "
            f"prunable modules are {sorted(ir.spaces)}"
        )
    scorer = Scorer(ir, splits["search"], metric, task.spec.ablation)
    prep = Prepared(loaded, task, metric, input_names, splits, ir, scorer)
    for name in splits:  # shapes, dtypes and labels of the eval splits, before any search
        prep.scorer_for(name)
    return prep


def score_splits(
    prep: Prepared, kept: dict, module: torch.nn.Module | None = None
) -> dict[str, SplitScore]:
    """Metric of the full model and of the rationale on every split (search values for
    ablation); with `module`, of that module instead of the masked rationale (a retrained
    block), its faithfulness still measured against the full and the emptied model."""
    scores = {}
    for name, split in prep.splits.items():
        scorer = prep.scorer_for(name)
        if module is None:
            value = scorer.score(kept, count=False)
        else:
            value = evaluate(module, prep.input_names, split, prep.metric, scorer.reference.outputs)
        scores[name] = SplitScore(scorer.reference.full, value, scorer.faithfulness_of(value))
    return scores


@dataclass
class Found:
    """A searched rationale: the IR with its mask, and how the search got there."""

    ir: IR
    faithfulness: float
    evaluations: int
    one_minimal: bool
    reports: list[tuple[str, dict]]
    trace: list[dict]


def search_rationale(
    prep: Prepared,
    method: str,
    budget: int,
    seed: int,
    progress: Progress | None = None,
    align: int = 1,
) -> Found:
    """Search, then repair (if the exact masked model misses keep), then make it 1-minimal
    with what is left of the budget. Under the `macs` objective with `align` > 1 (the export's
    channel multiple), `round-widths` then trades padding for whole channel blocks and a last
    minimize trims what that filled in."""
    spec = prep.task.spec
    scorer = prep.scorer
    first = scorer.evaluations

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress("search", scorer.evaluations - first, budget)

    options = dict(keep=spec.keep, seed=seed, scorer=scorer, progress=report)
    searched = SEARCH_PASSES[method](budget=budget, **options).run(prep.ir)
    repaired = Repair(keep=spec.keep, scorer=scorer).run(searched.ir)
    reports = [(method, searched.stats), ("repair", repaired.stats)]
    trace = list(searched.trace)
    rationale, faith = repaired.ir, repaired.stats["faithfulness"]
    one_minimal = bool(searched.stats.get("one_minimal")) and not repaired.stats["groups_restored"]
    left = budget - (scorer.evaluations - first)
    if faith >= spec.keep and not one_minimal and left > 0:
        minimized = Minimize(budget=left, **options).run(rationale)
        reports.append(("minimize", minimized.stats))
        trace += minimized.trace
        rationale, one_minimal = minimized.ir, bool(minimized.stats["one_minimal"])
        faith = minimized.stats["faithfulness"]
    left = budget - (scorer.evaluations - first)
    if prep.ir.objective == "macs" and align > 1 and faith >= spec.keep and left > 0:
        rounded = RoundWidths(budget=left, multiple=align, **options).run(rationale)
        reports.append(("round-widths", rounded.stats))
        trace += rounded.trace
        if rounded.stats["widths_dropped"]:
            rationale, faith = rounded.ir, rounded.stats["faithfulness"]
            left = budget - (scorer.evaluations - first)
            trimmed = Minimize(budget=max(left, 0), **options).run(rationale)
            reports.append(("minimize", trimmed.stats))
            trace += trimmed.trace
            rationale, one_minimal = trimmed.ir, bool(trimmed.stats["one_minimal"])
            faith = trimmed.stats["faithfulness"]
    faith = scorer.faithfulness(rationale.kept, count=False, exact=True)
    if faith < spec.keep <= repaired.stats["faithfulness"]:  # a float flip on a sliced base
        rationale = Repair(keep=spec.keep, scorer=scorer).run(rationale).ir
        faith = scorer.faithfulness(rationale.kept, count=False, exact=True)
    rationale.ablation = dict(scorer.values)
    return Found(rationale, faith, scorer.evaluations - first, one_minimal, reports, trace)


def extract(
    model: str | Path,
    task: str | Path,
    output: str | Path | None,
    arch: str | None = None,
    trust_model: bool = False,
    method: str | None = None,
    budget: int | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
    model_output: str | None = None,
    objective: str = "params",
    finetune: bool | None = None,
    resume: bool = False,
    align_channels: int = DEFAULT_MULTIPLE,
) -> ExtractResult:
    """Search the rationale of `model` for `task` and write it as an ONNX block to `output`.

    `finetune`: retrain the block's weights on `search` (option C); None follows the spec
    (retrain when it has a `finetune` section). Raises LegocError on bad input and TaskNotMet
    when no rationale reaches `keep` (the result is still described in the message; nothing is
    written). With an `output`, the search keeps a checkpoint beside it (legoc.checkpoint); on
    Ctrl-C it raises `Interrupted` saying where it was, and `resume=True` continues from the
    checkpoint to the same block. `align_channels`: pad conv channels with exact zero channels
    to this multiple at export (onnxruntime's fast conv kernels); 0 or 1 writes them as sliced.
    """
    started = time.perf_counter()
    if output is not None:
        check_output_file(Path(output), {"the model": model, "the task spec": task})
    elif resume:
        raise LegocError("--resume: the checkpoint lives beside the output; pass -o BLOCK")
    if method is not None and method not in SEARCH_PASSES:
        raise LegocError(f"--method {method!r}: use one of {sorted(SEARCH_PASSES)}")
    if objective not in OBJECTIVES:
        raise LegocError(f"--objective {objective!r}: use one of {list(OBJECTIVES)}")
    if align_channels < 0:
        raise LegocError(f"--align-channels {align_channels}: use 0 (off) or a positive multiple")
    check_seed(seed)
    prep = prepare(model, task, arch, trust_model, model_output)
    prep.ir.objective = objective
    spec = prep.task.spec
    method = method or spec.search.method
    budget = budget if budget is not None else spec.search.budget
    seed = seed if seed is not None else spec.search.seed
    header = None
    if output is not None:
        check_not_an_input(output, {**prep.inputs(), **arch_inputs(arch)})
        header = run_header(
            prep.loaded.sha256, prep.task.sha256, prep.task.split_paths(), method, budget, seed
        )
    with (
        output_lock(output) if output is not None else nullcontext(),
        checkpointed(prep.scorer, output, header, resume, budget) as run,
    ):
        found = search_rationale(prep, method, budget, seed, progress, align=align_channels)
        run.stage = "export"
        result = _finish(prep, found, method, seed, finetune, output, progress, align_channels)
    result.replayed, result.paid = run.replayed, run.paid
    result.seconds = time.perf_counter() - started
    return result


def arch_inputs(arch: str | None) -> dict[str, Path]:
    """The file an `--arch file.py:factory` reads (an input an output must not replace)."""
    module_ref = (arch or "").rpartition(":")[0]
    return {"the --arch file": Path(module_ref)} if module_ref.endswith(".py") else {}


def _finish(
    prep: Prepared,
    found: Found,
    method: str,
    seed: int,
    finetune: bool | None,
    output: str | Path | None,
    progress: Progress | None,
    align_channels: int = DEFAULT_MULTIPLE,
) -> ExtractResult:
    """Check the rationale meets keep, rewrite it, fine-tune it if asked, export it."""
    spec = prep.task.spec
    if found.faithfulness < spec.keep:
        raise TaskNotMet(
            f"no rationale reaches keep={spec.keep}: the best candidate reached faithfulness "
            f"{found.faithfulness:.4f} ({prep.metric.name}) within {found.evaluations} "
            "evaluations; lower keep or raise search.budget"
        )
    built = build_block(prep, found, method, seed)
    if finetune if finetune is not None else spec.finetune is not None:
        if progress:
            progress("finetune", 0, 1)
        built = finetune_block(prep, built, spec.finetune or FinetuneSpec(), seed)
    if output is not None:
        if progress:
            progress("export", 0, 1)
        write_block(prep, built, Path(output), align=align_channels)
    return built.result


@dataclass
class Built:
    """A block ready to export: its IR, the torch module the export must agree with, and its
    description."""

    block: IR
    reference: torch.nn.Module
    result: ExtractResult


def build_block(prep: Prepared, found: Found, method: str, seed: int) -> Built:
    """Rewrite a searched rationale into the sliced block and score it on every split."""
    rationale = found.ir
    scores = score_splits(prep, rationale.kept)
    block, reports = run_pipeline(rationale, [REWRITE_PASSES[n]() for n in REWRITE_PIPELINE])
    result = ExtractResult(
        task=prep.task.spec.name,
        output=None,
        kept=rationale.kept_units(),
        total=rationale.total_units(),
        params_source=prep.loaded.param_count(),
        params_block=block.param_count(),
        faithfulness=found.faithfulness,
        scores=scores,
        evaluations=found.evaluations,
        method=method,
        seconds=0.0,
        parity_max_abs_diff=None,
        one_minimal=found.one_minimal,
        keep=prep.task.spec.keep,
        passes=[*found.reports, *reports],
        trace=found.trace,
        seed=seed,
    )
    return Built(block, masked_model(rationale), result)


def finetune_block(prep: Prepared, built: Built, settings: FinetuneSpec, seed: int) -> Built:
    """Option C: retrain the block's weights on `search` (a seeded validation part held out
    for early stopping); the retrained block is its own export reference."""
    config = TrainConfig(epochs=settings.epochs, lr=settings.lr, seed=seed)
    search = prep.splits["search"]
    tuned = Finetune(search, prep.metric, config, prep.scorer.reference.outputs).run(built.block)
    scores = score_splits(prep, built.block.kept, module=tuned.ir.gm)
    result = replace(
        built.result,
        scores=scores,
        faithfulness=scores["search"].faithfulness,
        passes=[*built.result.passes, ("finetune", tuned.stats)],
        training={**tuned.report.metadata(), "faithfulness_before": built.result.faithfulness},
    )
    return Built(tuned.ir, tuned.ir.gm, result)


def write_block(
    prep: Prepared,
    built: Built,
    output: Path,
    extra: dict | None = None,
    align: int = DEFAULT_MULTIPLE,
) -> None:
    """Export the block with its metadata (plus `extra` keys) and record the parity.

    `align` > 1 pads conv channels to that multiple first (exact; `align-channels`): a layout
    choice for the runtime, so `params.block` stays the rationale's own count and the stored
    count goes to `legoc.layout`."""
    block = _aligned(built, align) if align > 1 else built.block
    metadata = {**block_metadata(prep, built.result), **(extra or {})}
    split = prep.splits["search"]
    built.result.parity_max_abs_diff = export_block(block, built.reference, split, output, metadata)
    built.result.output = str(output)


def _aligned(built: Built, align: int) -> IR:
    """The block with its conv channels padded (records what changed in the result)."""
    block, reports = run_pipeline(
        built.block, [AlignChannels(align, built.result.total), DeadCodeElimination()]
    )
    built.result.passes = [*built.result.passes, *reports]
    stats = reports[0][1]
    if not stats["channels_added"]:
        return built.block
    built.result.layout = {
        "align_channels": align,
        "channels_added": stats["channels_added"],
        "border_maps_folded": stats["border_maps_folded"],
        "stored_params": block.param_count(),
    }
    return block


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


def parse_input_shapes(specs: list[str]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for spec in specs:
        name, sep, dims = spec.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.split(",") if d.strip())
        except ValueError:
            raise LegocError(
                f"--input-shape {spec!r}: expected NAME=D1,D2,... (without batch)"
            ) from None
    return shapes


def inspect_model(
    model: str | Path,
    arch: str | None = None,
    trust_model: bool = False,
    task: str | Path | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> tuple[str, dict]:
    """The IR text of a model; with a task, also the full model's score on each split."""
    if task is not None:
        prep = prepare(model, task, arch, trust_model)
        scores = score_splits(prep, prep.ir.mask_for([]))
        return prep.ir.text(source=True), {name: s.metric_full for name, s in scores.items()}
    loaded = load_model(model, arch=arch, trust_model=trust_model)
    input_names = forward_arg_names(loaded.module)
    input_shapes = input_shapes or {}
    missing = [n for n in input_names if n not in input_shapes]
    if missing:
        raise LegocError(
            f"inspect needs the input shapes: pass --task SPEC or --input-shape "
            f"{missing[0]}=D1,D2,... for each of {input_names}"
        )
    example = {n: torch.zeros((2, *input_shapes[n])) for n in input_names}
    gm = trace(loaded.module, input_names, example)
    try:
        ir = build_ir(gm, input_names, example)
    except Exception as exc:  # noqa: BLE001
        raise LegocError(
            f"--input-shape: the model does not run on {input_shapes}: "
            f"{str(exc).strip().splitlines()[0]}"
        ) from None
    return ir.text(source=True), {}
