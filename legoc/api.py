"""The Python API behind the CLI: `extract` a block, `inspect` a model.

A thin facade: loading and checking live in `legoc.scoring.prepare`, the passes and the named
pipelines in `legoc.passes`, the block's rewrite, metadata and writing in `legoc.export`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from legoc.errors import LegocError, TaskNotMet
from legoc.export.block import After, Built, build_block, finetune_block, write_block
from legoc.export.metadata import block_metadata, versions
from legoc.export.result import ExtractResult, Found
from legoc.frontend.load import load_model, trace
from legoc.ir.core import IR, build_ir
from legoc.ir.frozen import nothing_removable
from legoc.passes.base import PassContext, PassOptionError, Pipeline
from legoc.passes.registry import METHODS, PASSES, extract_pipeline, parse_pipeline
from legoc.passes.rewrite.align_channels import DEFAULT_MULTIPLE
from legoc.passes.search.base import dead_groups
from legoc.runtime.files import check_not_an_input, check_output_file, output_lock
from legoc.scoring.budget import Budget
from legoc.scoring.guard import hold_out
from legoc.scoring.journal import checkpointed, run_header
from legoc.scoring.prepare import Prepared, Progress, SplitScore, prepare, score_splits
from legoc.scoring.remote import RayBackend, Source, import_ray
from legoc.task.device import resolve_device
from legoc.task.spec import FinetuneSpec, check_seed

log = logging.getLogger(__name__)

__all__ = [
    "OBJECTIVES",
    "Built",
    "ExtractResult",
    "Found",
    "Prepared",
    "Progress",
    "SplitScore",
    "arch_inputs",
    "block_metadata",
    "build_block",
    "extract",
    "finetune_block",
    "inspect_model",
    "ir_printer",
    "parse_input_shapes",
    "prepare",
    "score_splits",
    "search_pipeline",
    "search_rationale",
    "versions",
    "write_block",
]

OBJECTIVES = ("params", "macs")  # what the search minimises (MACs: per input row)


class _SearchPhases:
    """The passes' progress as phases of one search: `mask training` in gradient steps;
    `search` (the method), `minimize` and `round-widths` in budget used, of the run's budget.
    A phase ends at what it used: its total is lowered to it."""

    def __init__(self, progress: Progress | None, budget: Budget):
        self.progress, self.budget = progress, budget
        self.phase: str | None = None

    def used(self) -> int:
        return int(self.budget.used + 1e-9)

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.progress is None:
            return
        if stage == "mask training":
            self.progress(stage, done, total)
            return
        phase = stage if stage in ("minimize", "round-widths") else "search"
        if phase != self.phase:
            self.end()
            self.phase = phase
        self.progress(phase, self.used(), int(self.budget.limit))

    def end(self) -> None:
        if self.phase is not None and self.progress is not None:
            used = self.used()
            self.progress(self.phase, used, used)
        self.phase = None


def search_pipeline(method: str, align: int = 1, passes: str | None = None) -> Pipeline:
    """The search part of `extract`: the named extract pipeline for `method`, or `passes`
    (search passes only: the block and layout pipelines follow it)."""
    if passes is None:
        return parse_pipeline(extract_pipeline(method, align))
    try:
        pipeline = parse_pipeline(passes)
    except PassOptionError as exc:
        raise PassOptionError(f"--passes: {exc}") from None
    for p in pipeline.passes:
        if p.kind != "search":
            raise PassOptionError(
                f"--passes: {p.name} is a {p.kind} pass; --passes takes search passes (the "
                "block and layout pipelines run after them)"
            )
    return pipeline


def ir_printer(pass_name: str, write: Callable[[str], None]) -> Callable[[str, IR], None]:
    """An `after` callback writing the IR text after each run of the pass `pass_name`."""
    if pass_name not in PASSES:
        raise PassOptionError(
            f"--print-ir-after: unknown pass {pass_name!r}; passes are: {', '.join(sorted(PASSES))}"
        )

    def after(name: str, ir: IR) -> None:
        if name == pass_name:
            write(f"# IR after {name}\n{ir.text()}")

    return after


def search_rationale(
    prep: Prepared,
    method: str,
    budget: int | Budget,
    seed: int,
    progress: Progress | None = None,
    align: int = 1,
    deadline: float | None = None,
    passes: str | None = None,
    after: After | None = None,
) -> Found:
    """Run the search pipeline (`search_pipeline`): by default the method, then repair (if
    the exact masked model misses keep), then 1-minimal with what is left of the budget; under
    the `macs` objective with `align` > 1 (the export's channel multiple), `round-widths`
    trades padding for whole channel blocks and a last minimize trims what that filled in.

    One `Budget` bounds all the work of the pipeline (evaluations and gradient steps) except
    repair's, which runs only when the exact masked model misses keep. `deadline`
    (time.monotonic()) stops the passes where they are, with the best faithful result so far.
    """
    spec, scorer = prep.task.spec, prep.scorer
    if not isinstance(budget, Budget):
        budget = Budget(budget, scorer, deadline)
    pipeline = search_pipeline(method, align, passes)
    phases = _SearchPhases(progress, budget)
    ctx = PassContext(scorer, budget, spec.keep, seed, phases, after=after)
    ran = pipeline.run(prep.ir, ctx)
    phases.end()
    rationale = ran.ir
    rationale.ablation = dict(scorer.values)
    faith = scorer.faithfulness(rationale.kept, count=False, exact=True)
    one_minimal = ctx.verdict(rationale.kept).one_minimal
    stopped_by = "time-limit" if budget.timed_out else None if one_minimal else "budget"
    mask_steps = sum(stats.get("mask_steps", 0) for _, stats in ran.reports)
    work = {**budget.report(), "mask_steps": mask_steps, "stopped_by": stopped_by}
    found = Found(rationale, faith, budget.evaluations, one_minimal, ran.reports, ran.trace, work)
    if stopped_by == "budget" and not _removes_anything(prep.ir, rationale):
        found.warnings.append(
            f"the budget of {budget.limit} evaluations was too small for the search to remove "
            f"anything (it used {work['evaluations']} evaluations and {work['gradient']:.1f} "
            "evaluations' worth of gradient steps): the block is the whole model; raise --budget"
        )
    return found


def _removes_anything(ir: IR, rationale: IR) -> bool:
    """Whether the rationale removes a group that is not dead (dead ones change nothing)."""
    return bool(set(rationale.removed_groups()) - dead_groups(ir))


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
    time_limit: float | None = None,
    passes: str | None = None,
    after: After | None = None,
    device: str | None = None,
    ray: str | None = None,
    workers: int | None = None,
    hf_class: str | None = None,
) -> ExtractResult:
    """Search the rationale of `model` for `task` and write it as an ONNX block to `output`.

    `finetune`: retrain the block's weights on `search` (option C); None follows the spec
    (retrain when it has a `finetune` section). Raises LegocError on bad input and TaskNotMet
    when no rationale reaches `keep` (the result is still described in the message; nothing is
    written). With an `output`, the search keeps a checkpoint beside it (legoc.checkpoint); on
    Ctrl-C it raises `Interrupted` saying where it was, and `resume=True` continues from the
    checkpoint to the same block. `align_channels`: pad conv channels with exact zero channels
    to this multiple at export (onnxruntime's fast conv kernels); 0 or 1 writes them as sliced.
    `time_limit`: seconds from the start after which the search stops with the best faithful
    rationale found so far (the block is then built and written); TaskNotMet if by then it has
    removed nothing. Without it, the same seed gives the same block. `passes`: a pipeline of
    search passes run instead of the method's (`legoc.passes.registry`); `after`: called with
    each pass's name and IR (`ir_printer`). `device`: cpu | cuda | mps | auto (None: the
    spec's `device`), where scoring, gradients, mask training and fine-tuning run. `ray`:
    score candidates on `workers` Ray actors (None: as `search.backend` says; "local" starts
    a cluster here, else an address to join); the block is the local run's. `hf_class`: the
    transformers class a Hugging Face model folder is loaded as (default: its config's
    `architectures`).
    """
    started = time.perf_counter()
    deadline = None if time_limit is None else time.monotonic() + time_limit
    if output is not None:
        check_output_file(Path(output), {"the model": model, "the task spec": task})
    elif resume:
        raise LegocError("--resume: the checkpoint lives beside the output; pass -o BLOCK")
    if method is not None and method not in METHODS:
        raise LegocError(f"--method {method!r}: use one of {sorted(METHODS)}")
    if method is not None and passes is not None:
        raise LegocError("--method and --passes: give one (--passes replaces the method's search)")
    if objective not in OBJECTIVES:
        raise LegocError(f"--objective {objective!r}: use one of {list(OBJECTIVES)}")
    if align_channels < 0:
        raise LegocError(f"--align-channels {align_channels}: use 0 (off) or a positive multiple")
    if time_limit is not None and not time_limit > 0:
        raise LegocError(f"--time-limit {time_limit}: must be > 0 seconds")
    check_seed(seed)
    if passes is not None:
        passes = str(search_pipeline("auto", passes=passes))  # checked before any loading
    if device is not None:
        resolve_device(device)  # a bad --device is reported before any loading
    if ray is not None:
        import_ray()  # missing Ray is reported before any loading
    prep = prepare(
        model, task, arch, trust_model, model_output, progress, device=device, hf_class=hf_class
    )
    if not prep.ir.removable_groups():
        raise TaskNotMet(nothing_removable(prep.ir))
    prep.ir.objective = objective
    spec = prep.task.spec
    held = None
    if spec.search.validate_fraction is not None:  # the guard: faithful on both parts
        held = hold_out(prep, spec.search.validate_fraction, spec.search.seed, guard=True)
        prep = held.prep
    method = passes or method or spec.search.method
    limit = budget if budget is not None else spec.search.budget
    seed = seed if seed is not None else spec.search.seed
    header = None
    if output is not None:
        check_not_an_input(output, {**prep.inputs(), **arch_inputs(arch)})
        header = run_header(
            prep.loaded.sha256, prep.task.sha256, prep.task.split_paths(), method, limit, seed
        )
    work = Budget(limit, prep.scorer, deadline)
    remote = ray is not None or spec.search.backend == "ray"
    local_note = None
    if remote and held is not None:  # workers would score the whole search split, not its part
        remote = False
        local_note = "Ray not used: with search.validate the candidates are scored here"
    if remote:
        # the driver's thread count: kernels may split sums differently with another one
        threads = torch.get_num_threads()
        source = Source(
            str(model),
            str(task),
            arch,
            trust_model,
            model_output,
            str(prep.device),
            threads,
            hf_class,
        )
        workers = workers if workers is not None else spec.search.workers
        prep.scorer.backend = RayBackend(source, workers, ray)
    with (
        _closing(prep.scorer.backend),
        output_lock(output) if output is not None else nullcontext(),
        checkpointed(prep.scorer, output, header, resume, work) as run,
    ):
        found = search_rationale(
            prep, method, work, seed, progress, align_channels, passes=passes, after=after
        )
        found.budget["time_limit"] = time_limit
        prep.scorer.release()
        run.stage = "export"
        extra = None
        if held is not None:
            gap = {"fraction": spec.search.validate_fraction, **held.gap(found.ir.kept)}
            extra = {"legoc.validate": gap}
        result = _finish(
            prep, found, method, seed, finetune, output, progress, align_channels, after, extra
        )
        result.validate = extra["legoc.validate"] if extra else None
        if local_note is not None:
            result.warnings.append(local_note)
    result.replayed, result.paid = run.replayed, run.paid
    result.remote_answers = prep.scorer.remote_answers
    result.seconds = time.perf_counter() - started
    return result


@contextmanager
def _closing(backend):
    """Stop a remote backend's workers when the run ends, however it ends."""
    try:
        yield backend
    finally:
        if backend is not None:
            backend.close()


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
    after: After | None = None,
    extra: dict | None = None,
) -> ExtractResult:
    """Check the rationale meets keep, rewrite it, fine-tune it if asked, export it (with
    `extra` metadata keys)."""
    spec = prep.task.spec
    progress = progress or (lambda phase, done, total: None)
    timed_out = found.stopped_by == "time-limit"
    if found.faithfulness < spec.keep:
        raise TaskNotMet(
            f"no rationale reaches keep={spec.keep}: the best candidate reached faithfulness "
            f"{found.faithfulness:.4f} ({prep.metric.name}) within {found.evaluations} "
            + (
                f"evaluations, when the time limit ({found.budget['time_limit']:g} s) stopped "
                "the search; raise --time-limit"
                if timed_out
                else "evaluations; lower keep or raise search.budget"
            )
        )
    if timed_out and not _removes_anything(prep.ir, found.ir):
        raise TaskNotMet(
            f"the time limit ({found.budget['time_limit']:g} s) stopped the search after "
            f"{found.evaluations} evaluations, before it removed anything; nothing was written; "
            "raise --time-limit"
        )
    built = build_block(prep, found, method, seed, after)
    if finetune if finetune is not None else spec.finetune is not None:
        progress("finetune", 0, 1)
        built = finetune_block(prep, built, spec.finetune or FinetuneSpec(), seed)
        progress("finetune", 1, 1)
    if output is not None:
        progress("export", 0, 1)
        write_block(prep, built, Path(output), extra, align=align_channels, after=after)
        progress("export", 1, 1)
    return built.result


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
    hf_class: str | None = None,
) -> tuple[str, dict]:
    """The IR text of a model; with a task, also the full model's score on each split."""
    if task is not None:
        prep = prepare(model, task, arch, trust_model, hf_class=hf_class)
        scores = score_splits(prep, prep.ir.mask_for([]))
        return prep.ir.text(source=True), {name: s.metric_full for name, s in scores.items()}
    loaded = load_model(model, arch=arch, trust_model=trust_model, hf_class=hf_class)
    input_names = loaded.inputs()
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
    except Exception as exc:
        raise LegocError(
            f"--input-shape: the model does not run on {input_shapes}: "
            f"{str(exc).strip().splitlines()[0]}"
        ) from None
    return ir.text(source=True), {}
