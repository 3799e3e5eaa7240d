"""Everything a search needs, loaded and checked: the model, the task, its data, the IR and
the scorer of each split (`prepare`), and the scores of a kept set on every split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from legoc.errors import LegocError
from legoc.frontend.hf import with_segments
from legoc.frontend.load import LoadedModel, load_model, trace
from legoc.ir.core import IR, build_ir, run_quietly
from legoc.ir.tokens import sequence_of
from legoc.scoring.checks import check_measurable_gap
from legoc.scoring.scorer import Scorer
from legoc.task.metrics import METRICS, Metric
from legoc.task.spec import Split, Task, load_split, load_task
from legoc.task.text import encode_text, is_text_split, read_text_split, text_length
from legoc.task.training import evaluate

# (phase, done, total). Phases, in order: capture, analysis, mask training (gradient steps),
# search, minimize, round-widths (budget used, in evaluations, of the budget), finetune, export
# (0/1, then 1/1). Every phase ends with done == total: one that ends early (a search within
# its budget) reports its total lowered to what it used.
Progress = Callable[[str, int, int], None]


@dataclass
class SplitScore:
    metric_full: float
    metric_block: float
    faithfulness: float


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
    except Exception:  # shape problems are reported with context by build_ir
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
    progress: Progress | None = None,
    hf_class: str | None = None,
) -> Prepared:
    """Load and check everything a search needs; reports the `capture` (model, data, trace)
    and `analysis` (IR, reference scores) phases."""
    progress = progress or _silent
    task = load_task(task_path)
    progress("capture", 0, 1)
    loaded = load_model(model, arch=arch, trust_model=trust_model, hf_class=hf_class)
    metric = METRICS[task.spec.metric]
    input_names = loaded.inputs()
    text, input_names = tokenized_text(task, loaded, input_names)
    splits = {}
    for name, path in task.split_paths().items():
        label = "data.search" if name == "search" else f"data.eval.{name}"
        splits[name] = load_split(
            name, path, input_names, label, metric.needs_labels, task.spec.position, text.get(name)
        )
    for split_name, split in splits.items():
        _check_input_dtypes(loaded.module, split, split_name)
    example = _example_rows(splits["search"])
    gm = trace(loaded.module, input_names, example, model_output)
    progress("capture", 1, 1)
    progress("analysis", 0, 1)
    _check_outputs(gm, example, input_names, task.spec.outputs)
    try:
        ir = build_ir(gm, input_names, example, task.spec.outputs, task.spec.scope)
    except LegocError:
        raise
    except Exception as exc:  # shape propagation runs the model on the data
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
    if task.spec.ablation == "mean-per-position" and sequence_of(ir.gm) is None:
        raise LegocError(
            "ablation: mean-per-position needs a model with token inputs (integer tensors of "
            "shape (batch, tokens), captured with torch.export); use mean for this model"
        )
    scorer = Scorer(ir, splits["search"], metric, task.spec.ablation)
    if ir.removable_groups():  # with none, extract names what froze instead
        ref = scorer.reference
        check_measurable_gap(metric, ref.full, ref.empty, "data.search")
    prep = Prepared(loaded, task, metric, input_names, splits, ir, scorer)
    for name in splits:  # shapes, dtypes and labels of the eval splits, before any search
        prep.scorer_for(name)
    progress("analysis", 1, 1)
    return prep


def tokenized_text(
    task: Task, loaded: LoadedModel, input_names: list[str]
) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """The task's text splits (.jsonl) as tensors, encoded by the model folder's tokenizer
    to one length (`legoc.task.text`; {} when every split is a tensor file), and the model's
    input names (text pairs add token_type_ids)."""
    labels = {n: "data.search" if n == "search" else f"data.eval.{n}" for n in task.split_paths()}
    rows = {
        name: read_text_split(path, labels[name])
        for name, path in task.split_paths().items()
        if is_text_split(path)
    }
    if not rows:
        return {}, input_names
    if loaded.tokenizer is None:
        first = next(iter(rows))
        raise LegocError(
            f"{labels[first]}: a text split needs a tokenizer: give MODEL as a Hugging Face "
            "folder that holds one (save_pretrained the tokenizer into it)"
        )
    if any(r.pairs is not None for r in rows.values()):
        input_names = with_segments(loaded.module, input_names)
    length = text_length(loaded.tokenizer, rows)
    encoded = {n: encode_text(loaded.tokenizer, r, length, input_names) for n, r in rows.items()}
    return encoded, input_names


def _silent(phase: str, done: int, total: int) -> None:
    pass


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
