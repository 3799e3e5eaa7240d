"""`legoc compare`: options A, B and C over several seeds, every result judged the same way.

Per seed s: B searches a rationale with search seed s and exports it; C retrains that block
(training seed s); A trains a network from scratch sized to that B block (seed s). The full
model is exported once as a reference row. With several keep levels this is done per level
(a size curve), with scope sets B and C also run with pruning restricted to each set, and with
`validate` a guarded B too (legoc.experiment.sweep). Every ONNX file is then scored on every
split in onnxruntime with the task's raw metric (not faithfulness), and per split (and level)
a verdict says whether B >= A (weak case) and B >= A and B >= C (strong case), with "no" and
"not significant" as valid answers. Nothing is selected on eval splits: they are only scored.

The output folder is built in a temporary sibling and moved into place when complete, so a
failed run leaves no partial report.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import legoc
from legoc import api
from legoc.errors import LegocError, TaskNotMet
from legoc.experiment.baseline import DEFAULT_EPOCHS, DEFAULT_LR, input_shapes, train_baseline
from legoc.experiment.baseline_nets import check_family, choose_family
from legoc.experiment.report import REPORT_FORMAT, REPORT_MARKER
from legoc.experiment.result import PLAIN, CompareResult, Run, score_runs, verdicts
from legoc.experiment.sweep import (
    Variant,
    build_variants,
    chained_searches,
    chance_level,
    layer_shares,
    size_axis,
)
from legoc.export.writer import export_block
from legoc.ir.masking import masked_model
from legoc.passes.registry import METHODS, parse_pipeline
from legoc.passes.rewrite import BLOCK_PIPELINE
from legoc.runtime.block import Block
from legoc.runtime.files import check_inputs_outside, current_umask
from legoc.task.spec import FinetuneSpec, check_seed
from legoc.task.training import TrainConfig

log = logging.getLogger(__name__)

Progress = api.Progress


def compare(
    model: str | Path,
    task: str | Path,
    output: str | Path,
    arch: str | None = None,
    trust_model: bool = False,
    seeds: int = 3,
    method: str | None = None,
    budget: int | None = None,
    margin: float = 0.0,
    family: str | None = None,
    baseline_epochs: int = DEFAULT_EPOCHS,
    baseline_lr: float = DEFAULT_LR,
    finetune_epochs: int | None = None,
    finetune_lr: float | None = None,
    force: bool = False,
    progress: Progress | None = None,
    keep_levels: list[float] | None = None,
    scope_sets: dict[str, list[str]] | None = None,
    validate: float | None = None,
) -> CompareResult:
    """Run A, B and C with `seeds` seeds each and write DIR/report.{json,md} and plots.

    C retrains with the spec's `finetune` settings (or their defaults); `finetune_epochs` and
    `finetune_lr` override them for this comparison only. `keep_levels`, `scope_sets` and
    `validate` override the spec's `compare.keep`, `compare.scope_sets` and `search.validate`.
    """
    from legoc.experiment.report import write_report

    started = time.perf_counter()
    output = Path(output)
    _check_output_dir(output, force)
    if seeds < 1:
        raise LegocError(f"--seeds {seeds}: must be at least 1")
    check_family(family)
    if margin < 0:
        raise LegocError(f"--margin {margin}: must be >= 0")
    if method is not None and method not in METHODS:
        raise LegocError(f"--method {method!r}: use one of {sorted(METHODS)}")
    prep = api.prepare(model, task, arch, trust_model, progress=progress)
    if output.is_dir():  # --force replaces it: it must not hold what this run reads
        check_inputs_outside(output, {**prep.inputs(), **api.arch_inputs(arch)})
    spec = prep.task.spec
    method = method or spec.search.method
    budget = budget if budget is not None else spec.search.budget
    finetune = spec.finetune or FinetuneSpec()
    overrides = {"epochs": finetune_epochs, "lr": finetune_lr}
    try:
        finetune = FinetuneSpec(**{**finetune.model_dump(), **_given(overrides)})
    except ValueError:
        raise LegocError(
            f"--finetune-epochs/--finetune-lr {overrides}: epochs and lr must be > 0"
        ) from None
    sweep = spec.compare
    levels = keep_levels or (sweep.keep if sweep and sweep.keep else None) or [spec.keep]
    scope_sets = scope_sets or (sweep.scope_sets if sweep else None) or {}
    validate = validate if validate is not None else spec.search.validate_fraction
    if validate is not None and not 0 < validate < 1:
        raise LegocError(f"--validate {validate:g}: must be a fraction in (0, 1), e.g. 0.2")
    seed_list = [spec.search.seed + i for i in range(seeds)]
    check_seed(seed_list[-1], f"search.seed {spec.search.seed} + --seeds {seeds} - 1")
    references = {
        name: prep.scorer_for(name).reference.outputs
        for name in prep.splits
        if prep.metric.needs_reference
    }
    inputs = input_shapes(prep.splits, prep.input_names, _output_shape(prep))
    family_option, family = family, family or choose_family(inputs)
    settings = {
        "model": str(model),
        "arch": arch,
        "trust_model": trust_model,
        "task_spec": str(task),
        "method": method,
        "budget": budget,
        "keep": spec.keep,
        "keep_levels": sorted(levels, reverse=True),
        "scope_sets": scope_sets,
        "validate": validate,
        "seeds": seeds,
        "margin": margin,
        "finetune": {"epochs": finetune.epochs, "lr": finetune.lr},
        "baseline": {"family": family, "epochs": baseline_epochs, "lr": baseline_lr},
        "overrides": _given(
            {
                "family": family_option,
                "baseline_epochs": None if baseline_epochs == DEFAULT_EPOCHS else baseline_epochs,
                "baseline_lr": None if baseline_lr == DEFAULT_LR else baseline_lr,
                "finetune_epochs": finetune_epochs,
                "finetune_lr": finetune_lr,
                "keep": ",".join(f"{k:g}" for k in keep_levels) if keep_levels else None,
                "scope_sets": _scope_text(scope_sets) if scope_sets else None,
                "validate": validate,
            }
        ),
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        (staging / "runs").mkdir()
        variants = build_variants(prep, scope_sets, validate, spec.search.seed)
        sweeping = len(levels) > 1 or len(variants) > 1
        total = 1 + seeds * len(levels) * sum(len(v.options) for v in variants)
        step = _Steps(progress, total)
        runs = [_full_run(prep, staging)]
        step.done()
        sizes = {name: space.size for name, space in prep.ir.spaces.items()}
        for variant in variants:
            for seed in seed_list:
                for level in chained_searches(
                    variant,
                    levels,
                    seed,
                    method,
                    budget,
                    _search_progress(step, variant, seed, sweeping),
                ):
                    runs += _seed_runs(
                        level.prep,
                        staging,
                        seed,
                        method,
                        level,
                        finetune,
                        inputs,
                        family,
                        references,
                        step,
                        baseline_epochs,
                        baseline_lr,
                        _Cell(variant, level.keep, sizes, sweeping),
                    )
        paths = prep.task.split_paths()
        score_runs(staging, prep.input_names, paths, prep.metric.name, runs)
        result = CompareResult(
            task=spec.name,
            metric=prep.metric.name,
            higher_is_better=prep.metric.higher_is_better,
            splits=list(prep.splits),
            seeds=seed_list,
            settings=settings,
            runs=runs,
            verdicts=[],
            output=str(output),
            levels=sorted(levels, reverse=True),
            variants=[v.name for v in variants],
            chance=_chance(prep),
            size_axis=size_axis(prep.loaded.module),
        )
        if not result.ok_runs("B"):
            raise TaskNotMet(
                f"no seed's rationale reaches keep={min(levels)} within search.budget={budget}; "
                "nothing to compare (lower keep or raise the budget)"
            )
        result.verdicts = verdicts(result, margin)
        result.seconds = time.perf_counter() - started
        write_report(staging, result)
        _move_into_place(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _given(options: dict) -> dict:
    return {k: v for k, v in options.items() if v is not None}


class _Steps:
    """Overall progress: one step per exported run; a run's own phase (retraining C, training
    A) ends when the run does."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.count = progress, total, 0
        self.stage: str | None = None
        self.report(None)

    def report(self, stage: str | None) -> None:
        if self.progress is not None:
            self.progress("runs", self.count, self.total)
            if stage:
                self.progress(stage, 0, 1)
        self.stage = stage

    def done(self) -> None:
        if self.progress is not None and self.stage:
            self.progress(self.stage, 1, 1)
        self.count += 1
        self.report(None)


@dataclass
class _Cell:
    """Where a seed's runs sit: the variant, the keep level, and how files are named."""

    variant: Variant
    keep: float
    sizes: dict[str, int]  # every prunable module's unit count (for per-layer shares)
    sweeping: bool  # several levels or variants: file names carry them

    def path(self, option: str, seed: int) -> str:
        if not self.sweeping:
            return f"runs/{option}-seed{seed}.onnx"
        variant = "" if self.variant.name == PLAIN else f"{self.variant.name}-"
        return f"runs/{option}-{variant}keep{self.keep:g}-seed{seed}.onnx"

    def run(self, option: str, seed: int, path: str | None, **fields) -> Run:
        return Run(option, seed, path, keep=self.keep, variant=self.variant.name, **fields)


def _search_progress(step: _Steps, variant: Variant, seed: int, sweeping: bool):
    def report(keep: float, stage: str, done: int, total: int) -> None:
        if step.progress is not None:
            where = "" if variant.name == PLAIN else f" {variant.name}"
            where += f" keep {keep:g}" if sweeping else ""
            step.progress(f"B{where} seed {seed}: {stage}", done, total)

    return report


def _seed_runs(
    prep, staging, seed, method, level, finetune, inputs, family, references, step, epochs, lr, cell
) -> list[Run]:
    """B from what the search found, then C from B's block, then A sized to B's block, for
    one seed at one keep level (the options its variant runs)."""
    options, found = cell.variant.options, level.found
    keep = prep.task.spec.keep
    if found.faithfulness < keep:
        note = f"keep not met (faithfulness {found.faithfulness:.4f})"
        step.count += len(options)
        step.report(None)
        return [cell.run(o, seed, None, status=note) for o in options]
    started = time.perf_counter()
    built = api.build_block(prep, found, method, seed)
    gap = cell.variant.gap(found.ir.kept)
    tag = {"option": "B", "seed": seed, "keep": keep, "variant": cell.variant.name, **gap}
    path_b = cell.path("B", seed)
    # sliced as searched (align=0): the report compares models' sizes, not runtime layouts
    api.write_block(prep, built, staging / path_b, {"legoc.compare": tag}, align=0)
    details_b = {
        "faithfulness": found.faithfulness,
        "evaluations": found.evaluations,
        "started_from_kept": level.started_from,
        "search_seconds": level.seconds,
        "kept_share": layer_shares(found.ir.kept, cell.sizes),
        **gap,
    }
    seconds = time.perf_counter() - started + level.seconds  # the search, then the export
    runs = [cell.run("B", seed, path_b, seconds=seconds, details=details_b)]
    step.done()

    if "C" in options:
        started = time.perf_counter()
        step.report(f"C seed {seed}: retrain")
        tuned = api.finetune_block(prep, built, finetune, seed)
        path_c = cell.path("C", seed)
        tag_c = {**tag, "option": "C"}
        api.write_block(prep, tuned, staging / path_c, {"legoc.compare": tag_c}, align=0)
        details_c = {**tuned.result.training, "kept_share": details_b["kept_share"]}
        runs.append(
            cell.run("C", seed, path_c, seconds=time.perf_counter() - started, details=details_c)
        )
        step.done()

    if "A" in options:
        started = time.perf_counter()
        step.report(f"A seed {seed}: train")
        target = Block.load(staging / path_b).rationale_params()
        path_a = cell.path("A", seed)
        metadata = {
            **_common_metadata(prep),
            "legoc.compare": {"option": "A", "seed": seed, "keep": keep, "like": path_b},
        }
        config = TrainConfig(epochs=epochs, lr=lr, seed=seed)
        trained = train_baseline(
            family,
            inputs,
            target,
            prep.splits,
            prep.metric,
            config,
            references,
            staging / path_a,
            metadata,
        )
        details_a = {
            "family": family,
            "width": trained.width,
            "target_params": target,
            **trained.training,
        }
        runs.append(
            cell.run("A", seed, path_a, seconds=time.perf_counter() - started, details=details_a)
        )
        step.done()
    return runs


def _chance(prep: api.Prepared) -> dict[str, float]:
    levels = {name: chance_level(prep.metric.name, split.y) for name, split in prep.splits.items()}
    return {name: level for name, level in levels.items() if level is not None}


def _scope_text(sets: dict[str, list[str]]) -> str:
    return ";".join(f"{name}={','.join(globs)}" for name, globs in sets.items())


def _full_run(prep: api.Prepared, staging: Path) -> Run:
    """The source model itself as a block (nothing removed): the reference row, and for kl the
    outputs every other run is compared against."""
    started = time.perf_counter()
    full = prep.ir.with_kept(prep.ir.mask_for([]))
    full.ablation = dict(prep.scorer.values)
    block = parse_pipeline(BLOCK_PIPELINE).run(full).ir
    path = "runs/full.onnx"
    metadata = {**_common_metadata(prep), "legoc.compare": {"option": "full"}}
    export_block(block, masked_model(full), prep.splits["search"], staging / path, metadata)
    run = Run("full", None, path, seconds=time.perf_counter() - started)
    run.params = prep.loaded.param_count()  # the source's params, not its BN-folded export's
    return run


def _common_metadata(prep: api.Prepared) -> dict:
    return {
        "legoc.version": legoc.__version__,
        "legoc.task": prep.task.name,
        "legoc.source_sha256": prep.loaded.sha256,
        "legoc.spec_sha256": prep.task.sha256,
        "legoc.metric": prep.metric.name,
        "legoc.inputs": prep.input_names,
        "legoc.versions": api.versions(),
    }


def _output_shape(prep: api.Prepared) -> tuple[int, ...]:
    """The task output per row (what A must produce to stand in for B)."""
    search = prep.splits["search"]
    with torch.no_grad():
        out = prep.ir.gm(*[search.inputs[n][:2] for n in prep.input_names])
    return tuple(out.shape[1:])


def _check_output_dir(output: Path, force: bool) -> None:
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise LegocError(f"-o {output}: folder {parent} does not exist; create it first")
    if output.exists() and not output.is_dir():
        raise LegocError(f"-o {output}: is a file; give a folder for the report")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise LegocError(
            f"-o {output}: folder exists and is not empty; choose a new folder or pass --force "
            "to replace it (only once the new report is complete)"
        )
    if output.is_dir() and any(output.iterdir()) and not is_compare_report(output):
        raise LegocError(
            f"-o {output}: --force replaces only an earlier legoc compare report (a folder with "
            "its report.json), and this folder is not one; choose a new folder"
        )
    if not os.access(parent, os.W_OK):
        raise LegocError(f"-o {output}: folder {parent} is not writable")


def is_compare_report(folder: Path) -> bool:
    """Whether `folder` holds a report `legoc compare` wrote (its report.json says so)."""
    try:
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(report, dict):
        return False
    legacy = str(report.get("command", "")).startswith("legoc compare ")  # before the marker
    return report.get(REPORT_MARKER) == REPORT_FORMAT or legacy


def _move_into_place(staging: Path, output: Path) -> None:
    mode = stat.S_IMODE(output.stat().st_mode) if output.is_dir() else 0o777 & ~current_umask()
    os.chmod(staging, mode)  # mkdtemp made it 0700
    if output.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
        os.replace(output, old / output.name)
        os.replace(staging, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, output)
