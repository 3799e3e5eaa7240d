"""Search benchmark: legoc's search methods against the standard structural-pruning baselines.

For every model, every method gets the same `keep` (the spec's) and the same budget of
candidate evaluations, and each runs on a fresh `legoc.api.prepare()` (fresh Scorer: counts
and caches do not leak between methods). Printed per model: kept params (the real block size
after legoc's rewrite pipeline), the ratio to the reference method (auto, else greedy),
faithfulness on `search` and on every eval split, evaluations, wall time and evaluations per
second relative to plain forward passes per second; then the targets with PASS/MISS.

    python benchmarks/search.py --quick
    python benchmarks/search.py --models shapes,wide --out results.json

See benchmarks/README.md for the definitions of the columns and the baselines.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

import legoc
from legoc import api
from legoc.frontend.load import trace
from legoc.ir.core import build_ir
from legoc.ir.masking import masked_model
from legoc.passes.base import PassContext
from legoc.passes.registry import METHODS, MagnitudeSearch, parse_pipeline
from legoc.passes.rewrite import BLOCK_PIPELINE
from legoc.passes.search.base import SearchContext
from legoc.passes.search.ranking import group_order, prune_prefix
from legoc.scoring.budget import Budget
from legoc.scoring.scorer import Scorer
from legoc.testing import train_wide, wide_sample, write_task

ROOT = Path(__file__).resolve().parents[1]

SEARCH_PASSES = METHODS  # the search methods legoc's rows run (legoc.passes.registry)

ALL_MODELS = ("shapes", "wide", "cnn", "planted")
DEFAULT_MODELS = "shapes,wide"
QUICK_BUDGET = {"shapes": 150, "wide": 150, "cnn": 60, "planted": 60}
TINY = {"cnn", "planted"}  # one thread: OpenMP spin-waits make tiny models slower on two
TARGET_RANKING = 0.7  # auto <= 0.7x magnitude / taylor params
TARGET_RANDOM = 0.5  # auto <= 0.5x random params
TARGET_SPEED = 2.0  # evaluations/s >= 2x forward passes/s
TARGET_PEER = 1.0  # DESIGN §4: never larger than the simplest peer (torch-pruning here)


# ---------------------------------------------------------------------------------------------
# Models: each case is a model file + arch + task spec, loaded through api.prepare like any user's
# ---------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    model: Path
    task: Path
    arch: str
    budget: int  # the spec's search.budget
    keep: float
    note: str = ""


def case_shapes(work: Path, args) -> Case:
    ex = ROOT / "examples" / "shapes"
    spec = yaml.safe_load((ex / "task.yaml").read_text())
    return Case(
        "shapes",
        ex / "model.pt",
        ex / "task.yaml",
        str(ex / "model.py") + ":make_model",
        spec["search"]["budget"],
        spec["keep"],
        "examples/shapes: CNN 694,508 params, task = 3 of 12 outputs",
    )


def case_wide(work: Path, args) -> Case:
    folder = work / "wide"
    data = folder / "data"
    model_path = folder / "model.pt"
    data.mkdir(parents=True, exist_ok=True)
    steps = args.wide_steps
    stamp = folder / f"trained-{steps}.ok"
    if not stamp.exists():
        started = time.perf_counter()
        model = train_wide(steps=steps)
        torch.save(model.state_dict(), model_path)
        torch.save(wide_sample(2000, seed=10), data / "search.pt")
        torch.save(wide_sample(2000, seed=11), data / "iid.pt")
        torch.save(wide_sample(2000, seed=12, scale=1.5), data / "scaled.pt")
        torch.save(wide_sample(2000, seed=13, noise=0.5), data / "noisy.pt")
        stamp.write_text(f"{time.perf_counter() - started:.1f}\n")
        print(f"[wide] trained {steps} Adam steps in {stamp.read_text().strip()} s", flush=True)
    spec = {
        "legoc": 1,
        "name": "wide-teacher",
        "data": {
            "search": "data/search.pt",
            "eval": {"iid": "data/iid.pt", "scaled": "data/scaled.pt", "noisy": "data/noisy.pt"},
        },
        "metric": "accuracy",
        "keep": 0.95,
        "ablation": "mean",
        "search": {"method": "auto", "budget": 2000, "seed": 0},
    }
    task = folder / "task.yaml"
    task.write_text(yaml.safe_dump(spec, sort_keys=False))
    return Case(
        "wide",
        model_path,
        task,
        "legoc.testing:make_wide",
        2000,
        0.95,
        f"MLP 32-768-768-10 ({steps} seeded Adam steps), labels from a 32-24-10 teacher; "
        "splits: iid, scaled (x*1.5), noisy (x+N(0,0.5^2))",
    )


def case_tiny(kind: str):
    def build(work: Path, args) -> Case:
        paths = write_task(work / kind, kind=kind, n=256)
        spec = yaml.safe_load(paths["spec"].read_text())
        return Case(
            kind,
            paths["model"],
            paths["spec"],
            paths["arch"],
            spec["search"]["budget"],
            spec["keep"],
            f"legoc.testing.write_task(kind={kind!r}, n=256): smoke model",
        )

    return build


CASES = {
    "shapes": case_shapes,
    "wide": case_wide,
    "cnn": case_tiny("cnn"),
    "planted": case_tiny("planted"),
}


# ---------------------------------------------------------------------------------------------
# Helpers shared by the methods
# ---------------------------------------------------------------------------------------------
@dataclass
class Row:
    method: str
    kind: str  # legoc | ranking | external
    params: float | None = None
    params_min: float | None = None
    params_max: float | None = None
    faith: dict[str, float] = field(default_factory=dict)
    evaluations: float | None = None
    gradient_passes: float | None = None
    seconds: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def evals_per_s(self) -> float | None:
        if not self.evaluations or not self.seconds:
            return None
        return self.evaluations / self.seconds


def fresh(case: Case) -> api.Prepared:
    return api.prepare(case.model, case.task, case.arch)


def model_output(module, inputs: dict, input_names: list[str], outputs) -> torch.Tensor:
    out = module(*[inputs[n] for n in input_names])
    if isinstance(out, (tuple, list)):
        out = out[0]
    elif isinstance(out, dict):
        out = out.get("logits", next(iter(out.values())))
    if outputs is not None:
        out = out[..., list(outputs)]
    return out


def forwards_per_second(prep: api.Prepared, repeats: int = 5, channels_last: bool = False) -> float:
    """Plain full passes of the source nn.Module over the search split, in the Scorer's batch
    size, under no_grad (one warm-up pass not counted). `channels_last`: the module and its
    4-d inputs in channels-last layout, the layout legoc's scorer runs convolutions in (a
    fairer yardstick for conv models: it alone makes their plain pass faster)."""
    module = prep.loaded.module.eval()
    if channels_last:
        module = copy.deepcopy(module).to(memory_format=torch.channels_last)
    split = prep.splits["search"]
    bs = prep.scorer.batch_size

    def layout(t: torch.Tensor) -> torch.Tensor:
        if channels_last and t.dim() == 4:
            return t.contiguous(memory_format=torch.channels_last)
        return t

    def one_pass():
        for inputs, _, _ in split.batches(bs):
            module(*[layout(inputs[n]) for n in prep.input_names])

    with torch.no_grad():
        one_pass()
        started = time.perf_counter()
        for _ in range(repeats):
            one_pass()
    return repeats / (time.perf_counter() - started)


def dead_groups(ir) -> list[int]:
    return [g for g in ir.removable_groups() if ir.groups[g].dead]


def finish_mask(prep: api.Prepared, kept: dict, row: Row) -> None:
    """Real block size (rewrite pipeline), faithfulness on every split, exactness checks."""
    scorer = prep.scorer
    masked = prep.ir.with_kept(kept)
    masked.ablation = dict(scorer.values)
    block = parse_pipeline(BLOCK_PIPELINE).run(masked).ir
    row.params = block.param_count()
    scores = api.score_splits(prep, kept)
    row.faith = {name: s.faithfulness for name, s in scores.items()}
    exact = scorer.faithfulness(kept, count=False, exact=True)
    row.extra["faith_search_exact"] = exact
    if abs(exact - row.faith["search"]) > 1e-9:
        row.notes.append(
            f"search faith via score_splits {row.faith['search']:.4f} != exact "
            f"masked model {exact:.4f}"
        )
    if exact < prep.task.spec.keep:
        row.notes.append(f"BELOW KEEP on exact masked model ({exact:.4f})")
    # the block must compute what the masked model computes
    reference = masked_model(masked)
    diff = 0.0
    with torch.no_grad():
        for inputs, _, _ in prep.splits["search"].batches(scorer.batch_size):
            args = [inputs[n] for n in prep.input_names]
            diff = max(diff, float((block.gm(*args) - reference(*args)).abs().max()))
    row.extra["parity_max_abs_diff"] = diff
    if diff > 1e-4:
        row.notes.append(f"block != masked model (max abs diff {diff:.2e})")
    row.extra["units_kept"] = {k: f"{int(v.sum())}/{v.size}" for k, v in sorted(kept.items())}


# ---------------------------------------------------------------------------------------------
# legoc search methods (every entry of SEARCH_PASSES at run time)
# ---------------------------------------------------------------------------------------------
def progress_printer(label: str):
    """Report every quarter of the budget on stderr (long runs should show they are alive)."""
    shown = {0}
    started = time.perf_counter()

    def report(stage: str, done: int, total: int) -> None:
        if stage == "mask training":  # gradient steps, not the budget
            return
        quarter = min(4, done * 4 // max(total, 1))
        if quarter not in shown:
            shown.add(quarter)
            print(
                f"    {label}: {done}/{total} evaluations, {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    return report


def run_legoc(case: Case, name: str, budget: int, seed: int) -> Row:
    """The method as `legoc extract` runs it: `api.search_rationale` (the method, repair, then
    1-minimal with the budget left)."""
    row = Row(f"legoc:{name}", "legoc")
    prep = fresh(case)
    scorer = prep.scorer
    start_evals = scorer.evaluations
    started = time.perf_counter()
    found = api.search_rationale(prep, name, budget, seed, progress=progress_printer(name))
    row.seconds = time.perf_counter() - started
    kept = found.ir.kept
    reports = dict(found.reports)
    stats = reports.get(name, {})
    row.extra.update(
        path="api.search_rationale",
        reports=reports,
        one_minimal=found.one_minimal,
        reported_evaluations=found.evaluations,
    )
    row.notes.append("1-minimal" if found.one_minimal else "not proven 1-minimal")
    if reports.get("repair", {}).get("groups_restored"):
        row.notes.append(f"repair restored {reports['repair']['groups_restored']} groups")
    if "minimize" in reports:
        row.notes.append(f"+minimize ({reports['minimize'].get('evaluations')} evals)")
    row.evaluations = scorer.evaluations - start_evals
    row.gradient_passes = stats.get("gradient_passes")
    if stats.get("evaluations") is not None and stats["evaluations"] > budget:
        row.notes.append(f"search used {stats['evaluations']} > budget {budget}")
    if row.evaluations > budget:
        row.notes.append(f"{row.evaluations} evaluations in all > budget {budget}")
    finish_mask(prep, kept, row)
    return row


# ---------------------------------------------------------------------------------------------
# Ranking baselines inside legoc: rank once, largest faithful prefix by bisection (prune_prefix)
# ---------------------------------------------------------------------------------------------
def taylor_scores(prep: api.Prepared) -> dict[str, np.ndarray]:
    """First-order Taylor importance with zero ablation (Molchanov et al. 2017): per unit,
    |sum over positions of activation * d(loss)/d(activation)|, averaged over the search rows.
    The activation is the unit itself (its producer module's output, where legoc ablates);
    the loss is the spec metric's proxy (cross-entropy for accuracy), summed over rows so each
    row's gradient is its own loss's. Forward hooks + a plain backward on the source model."""
    module = copy.deepcopy(prep.loaded.module).eval()
    named = dict(module.named_modules())
    spaces = prep.ir.spaces
    layouts = prep.ir.analysis.layouts
    totals = {name: torch.zeros(space.size, dtype=torch.float64) for name, space in spaces.items()}
    handles = []

    def hook_for(name: str, axis: int):
        def hook(_mod, _inp, out):
            act = out.detach()

            def on_grad(grad):
                a = act.movedim(axis, -1).reshape(act.shape[0], -1, act.shape[axis])
                g = grad.movedim(axis, -1).reshape(grad.shape[0], -1, grad.shape[axis])
                totals[name].add_((a * g).sum(1).abs().sum(0).double())

            out.register_hook(on_grad)

        return hook

    for name, space in spaces.items():
        if name not in named:
            raise RuntimeError(f"unit space {name!r} is not a module of the source model")
        handles.append(named[name].register_forward_hook(hook_for(name, layouts[space.node].axis)))
    metric, outputs = prep.metric, prep.task.spec.outputs
    split = prep.splits["search"]
    ref_all = prep.scorer.reference.outputs
    try:
        offset = 0
        for inputs, y, extras in split.batches(prep.scorer.batch_size):
            rows = len(next(iter(inputs.values())))
            ref = None if ref_all is None else ref_all[offset : offset + rows]
            offset += rows
            logits = model_output(module, inputs, prep.input_names, outputs)
            loss = metric.proxy_loss(logits, y, ref, extras.get("y_alt"))
            loss.backward()
    finally:
        for h in handles:
            h.remove()
    n = len(split)
    return {name: (t / n).numpy() for name, t in totals.items()}


def ranked_prefix(ir, scorer, order, keep, budget, removed):
    """legoc's `prune_prefix` (one-shot: largest faithful prefix of `order`, by bisection)."""
    ctx = PassContext(scorer, Budget(budget, scorer), keep)
    return prune_prefix(SearchContext(MagnitudeSearch(), ir, ctx), order, removed=removed)


def run_ranking(case: Case, method: str, budget: int, seed: int = 0) -> Row:
    prep = fresh(case)
    ir, scorer, keep = prep.ir, prep.scorer, prep.task.spec.keep
    row = Row(method, "ranking")
    start_evals = scorer.evaluations
    started = time.perf_counter()
    dead = dead_groups(ir)
    candidates = [g for g in ir.removable_groups() if g not in set(dead)]
    if method == "random":
        rng = np.random.default_rng(seed)
        order = [candidates[i] for i in rng.permutation(len(candidates))]
        row.gradient_passes = 0
    elif method == "magnitude":  # legoc's own `magnitude` search pass, as --passes runs it
        result = MagnitudeSearch().run(ir, PassContext(scorer, Budget(budget, scorer), keep))
        row.seconds = time.perf_counter() - started
        row.evaluations = scorer.evaluations - start_evals
        row.gradient_passes = 0
        row.extra.update(
            groups_removed=len(result.ir.removed_groups()),
            prefix_faithfulness=result.stats["faithfulness"],
            dead_groups_removed_first=len(dead),
            path="legoc.passes.MagnitudeSearch",
        )
        finish_mask(prep, result.ir.kept, row)
        return row
    elif method == "taylor":
        order = group_order(ir, taylor_scores(prep), per_param=False, candidates=candidates)
        row.gradient_passes = 1
    else:
        raise ValueError(method)
    removed, faith = ranked_prefix(ir, scorer, order, keep, budget, frozenset(dead))
    row.seconds = time.perf_counter() - started
    row.evaluations = scorer.evaluations - start_evals
    row.extra.update(
        groups_removed=len(removed), prefix_faithfulness=faith, dead_groups_removed_first=len(dead)
    )
    finish_mask(prep, ir.mask_for(sorted(removed)), row)
    return row


def run_random(case: Case, budget: int, seeds: int) -> Row:
    rows = [run_ranking(case, "random", budget, seed=s) for s in range(seeds)]
    row = Row("random", "ranking")
    params = [r.params for r in rows]
    row.params = float(np.mean(params))
    row.params_min, row.params_max = float(min(params)), float(max(params))
    for split in rows[0].faith:
        row.faith[split] = float(np.mean([r.faith[split] for r in rows]))
    row.evaluations = float(np.mean([r.evaluations for r in rows]))
    row.gradient_passes = 0
    row.seconds = float(np.mean([r.seconds for r in rows]))
    row.notes.append(f"mean of {seeds} seeds; params {int(row.params_min)}..{int(row.params_max)}")
    for r in rows:
        row.notes.extend(n for n in r.notes if n not in row.notes)
    row.extra["seeds"] = [
        {
            "seed": s,
            "params": r.params,
            "faith": r.faith,
            "evaluations": r.evaluations,
            "seconds": r.seconds,
            **r.extra,
        }
        for s, r in enumerate(rows)
    ]
    return row


# ---------------------------------------------------------------------------------------------
# torch-pruning (external peer): global pruning ratio by bisection to meet keep on search
# ---------------------------------------------------------------------------------------------
def final_layer(module, inputs: dict, input_names: list[str]):
    """The last Linear/Conv the forward pass calls: the classifier torch-pruning must keep."""
    order = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in module.modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))
    ]
    try:
        with torch.no_grad():
            module(*[inputs[n] for n in input_names])
    finally:
        for h in hooks:
            h.remove()
    return order[-1]


class ModuleScorer:
    """The spec's metric and faithfulness for a plain nn.Module on each split."""

    def __init__(self, prep: api.Prepared):
        self.prep = prep
        self.outputs = prep.task.spec.outputs
        self.source = prep.loaded.module.eval()
        self.full: dict[str, float] = {}
        self.empty: dict[str, float] = {}
        self.refs: dict[str, torch.Tensor | None] = {}
        for name, split in prep.splits.items():
            ref = None
            if prep.metric.needs_reference:
                ref = self._outputs(self.source, split)
            self.refs[name] = ref
            self.full[name] = self.metric(self.source, name)
            if not prep.metric.higher_is_better:  # faithfulness needs m(empty): legoc's
                if name == "search":
                    self.empty[name] = prep.scorer.reference.empty
                else:
                    self.empty[name] = Scorer(
                        prep.ir, split, prep.metric, values=prep.scorer.values
                    ).reference.empty

    def _outputs(self, module, split) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat(
                [
                    model_output(module, inputs, self.prep.input_names, self.outputs)
                    for inputs, _, _ in split.batches(self.prep.scorer.batch_size)
                ]
            )

    def metric(self, module, name: str) -> float:
        split = self.prep.splits[name]
        ref_all = self.refs[name]
        total, n, offset = 0.0, 0, 0
        module.eval()
        with torch.no_grad():
            for inputs, y, extras in split.batches(self.prep.scorer.batch_size):
                logits = model_output(module, inputs, self.prep.input_names, self.outputs)
                rows = logits.shape[0]
                ref = None if ref_all is None else ref_all[offset : offset + rows]
                offset += rows
                s, c = self.prep.metric.batch_sum(logits, y, ref, extras.get("y_alt"))
                total, n = total + s, n + c
        return total / max(n, 1)

    def faithfulness(self, module, name: str) -> float:
        value = self.metric(module, name)
        if self.prep.metric.higher_is_better:
            return value / self.full[name]
        span = self.empty[name] - self.full[name]
        return (self.empty[name] - value) / span if span > 0 else float(value <= self.full[name])


def float_tensor_count(module) -> int:
    """All float parameters and buffers (legoc's IR.param_count convention: BN stats count)."""
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.numel() for t in tensors.values() if t.is_floating_point())


def legoc_convention_params(prep: api.Prepared, module) -> tuple[int, float]:
    """The pruned module's size after legoc's own lossless rewrites (task outputs selected and
    unread units dropped, BatchNorm folded into its conv, dead code removed), so its count is
    comparable with a legoc block's. Returns (params, max abs diff against the module)."""
    module = copy.deepcopy(module).eval()
    gm = trace(module, prep.input_names)
    example = {n: prep.splits["search"].inputs[n][:2].clone() for n in prep.input_names}
    ir = build_ir(gm, prep.input_names, example, prep.task.spec.outputs, None)
    ir = ir.with_kept(ir.mask_for(dead_groups(ir)))
    ir.ablation = {name: torch.zeros(space.size) for name, space in ir.spaces.items()}
    block = parse_pipeline(BLOCK_PIPELINE).run(ir).ir
    diff = 0.0
    with torch.no_grad():
        for inputs, _, _ in prep.splits["search"].batches(prep.scorer.batch_size):
            args = [inputs[n] for n in prep.input_names]
            mine = model_output(module, inputs, prep.input_names, prep.task.spec.outputs)
            diff = max(diff, float((block.gm(*args) - mine).abs().max()))
    return block.param_count(), diff


def run_torch_pruning(case: Case, importance: str, steps: int) -> Row:
    import torch_pruning as tp

    row = Row(f"tp-{importance}", "external")
    prep = fresh(case)
    ms = ModuleScorer(prep)
    keep = prep.task.spec.keep
    split = prep.splits["search"]
    first = {n: split.inputs[n][:2].clone() for n in prep.input_names}
    example = first[prep.input_names[0]] if len(prep.input_names) == 1 else first
    started = time.perf_counter()
    evaluations, grad_passes = 0, 0
    trials = []

    def prune(ratio: float):
        nonlocal grad_passes
        model = copy.deepcopy(prep.loaded.module).eval()
        head = final_layer(model, first, prep.input_names)
        if importance == "magnitude":
            imp = tp.importance.GroupMagnitudeImportance(p=1)
        else:
            imp = tp.importance.GroupTaylorImportance()
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=imp,
            pruning_ratio=ratio,
            global_pruning=True,
            ignored_layers=[head],
        )
        if importance == "taylor":  # tp's Taylor reads .grad of the weights: one backward pass
            model.zero_grad()
            ref_all = prep.scorer.reference.outputs
            offset = 0
            for inputs, y, extras in split.batches(prep.scorer.batch_size):
                rows = len(next(iter(inputs.values())))
                ref = None if ref_all is None else ref_all[offset : offset + rows]
                offset += rows
                logits = model_output(model, inputs, prep.input_names, prep.task.spec.outputs)
                prep.metric.proxy_loss(logits, y, ref, extras.get("y_alt")).backward()
            grad_passes += 1
        pruner.step()
        model.zero_grad(set_to_none=True)
        return model.eval()

    lo, hi = 0.0, 1.0
    best = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        try:
            model = prune(mid)
            faith = ms.faithfulness(model, "search")
            evaluations += 1
        except Exception as exc:  # a ratio tp cannot realise counts as a miss
            trials.append({"ratio": mid, "error": f"{type(exc).__name__}: {exc}"})
            hi = mid
            continue
        trials.append({"ratio": mid, "faithfulness": faith, "params": float_tensor_count(model)})
        if faith >= keep:
            lo, best = mid, model
        else:
            hi = mid
    if best is None:
        best = copy.deepcopy(prep.loaded.module).eval()
        row.notes.append("no ratio met keep: the full model")
    row.seconds = time.perf_counter() - started
    row.evaluations = evaluations
    row.gradient_passes = grad_passes
    row.faith = {name: ms.faithfulness(best, name) for name in prep.splits}
    raw = float_tensor_count(best)
    row.extra.update(
        ratio=lo,
        trials=trials,
        params_raw=raw,
        full_metric=ms.full,
        legoc_full_metric={"search": prep.scorer.reference.full},
    )
    if abs(ms.full["search"] - prep.scorer.reference.full) > 1e-9:
        row.notes.append(
            f"full-model metric {ms.full['search']:.4f} != legoc's {prep.scorer.reference.full:.4f}"
        )
    try:
        params, diff = legoc_convention_params(prep, best)
        row.params = params
        row.extra["legoc_convention_parity"] = diff
        row.notes.append(f"ratio {lo:.3f}; raw nn.Module {raw:,} params")
        if diff > 1e-4:
            row.notes.append(f"legoc-convention rewrite differs from the module by {diff:.1e}")
    except Exception as exc:  # report the raw count instead
        row.params = raw
        row.notes.append(
            f"ratio {lo:.3f}; raw count (legoc rewrite failed: {type(exc).__name__}: {exc})"
        )
    source_raw = float_tensor_count(prep.loaded.module)
    if lo > 0 and raw == source_raw:
        row.notes.append(f"tp removed nothing at ratio {lo:.3f}")
    row.notes.append("zero ablation, no bias compensation")
    return row


# ---------------------------------------------------------------------------------------------
# Running one model and printing its table
# ---------------------------------------------------------------------------------------------
def reference_method() -> str:
    if "auto" in SEARCH_PASSES:
        return "auto"
    if "greedy" in SEARCH_PASSES:
        return "greedy"
    return next(iter(SEARCH_PASSES))


def guarded(method: str, kind: str, fn, *a) -> Row:
    started = time.perf_counter()
    try:
        return fn(*a)
    except Exception as exc:  # one failing method must not stop the benchmark
        row = Row(method, kind, seconds=time.perf_counter() - started)
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        row.error = f"{type(exc).__name__}: {msg}"[:300]
        row.extra["traceback"] = traceback.format_exc()
        return row


def run_model(name: str, work: Path, args) -> dict:
    torch.set_num_threads(1 if name in TINY else min(2, args.threads))
    started = time.perf_counter()
    case = CASES[name](work, args)
    budget = args.budget or (QUICK_BUDGET[name] if args.quick else case.budget)
    tp_steps = 6 if args.quick else 8
    prep = fresh(case)
    fwd = forwards_per_second(prep)
    info = {
        "model": name,
        "note": case.note,
        "keep": prep.task.spec.keep,
        "metric": prep.metric.name,
        "budget": budget,
        "source_params": prep.ir.param_count(),
        "removable_groups": len(prep.ir.removable_groups()),
        "splits": {k: len(v) for k, v in prep.splits.items()},
        "forwards_per_s": fwd,
        "forwards_per_s_channels_last": forwards_per_second(prep, channels_last=True),
        "threads": torch.get_num_threads(),
    }
    ref = reference_method()
    legoc_methods = [ref, *sorted(m for m in SEARCH_PASSES if m != ref)]
    rows: list[Row] = []
    plan = [(f"legoc:{m}", "legoc", run_legoc, case, m, budget, args.seed) for m in legoc_methods]
    plan += [
        ("random", "ranking", run_random, case, budget, args.seeds),
        ("magnitude", "ranking", run_ranking, case, "magnitude", budget),
        ("taylor", "ranking", run_ranking, case, "taylor", budget),
        ("tp-magnitude", "external", run_torch_pruning, case, "magnitude", tp_steps),
        ("tp-taylor", "external", run_torch_pruning, case, "taylor", tp_steps),
    ]
    if args.methods:
        wanted = {m.strip() for m in args.methods.split(",")} | {f"legoc:{ref}"}
        plan = [step for step in plan if step[0] in wanted]
    fwd_all = [fwd]
    for method, kind, fn, *a in plan:
        print(f"[{name}] {method} ...", flush=True)
        before = forwards_per_second(prep)
        before_cl = forwards_per_second(prep, channels_last=True)
        loads = [os.getloadavg()[0]]
        row = guarded(method, kind, fn, *a)
        loads.append(os.getloadavg()[0])
        after = forwards_per_second(prep)
        after_cl = forwards_per_second(prep, channels_last=True)
        fwd_all += [before, after]
        # the plain-forward rate right before and after the method: contention from other
        # processes shifts both rates alike, so their ratio stays meaningful
        row.extra.update(
            forwards_per_s=(before + after) / 2,
            forwards_per_s_before=before,
            forwards_per_s_after=after,
            forwards_per_s_channels_last=(before_cl + after_cl) / 2,
            load_avg=loads,
        )
        if min(before, after) < 0.7 * max(before, after):
            row.notes.append(f"timing unstable: fwd/s {before:.2f} before vs {after:.2f} after")
        if row.error:
            print(f"[{name}] {method} FAILED: {row.error}", flush=True)
        rows.append(row)
    info["forwards_per_s"] = float(np.median(fwd_all))
    info["load_avg_max"] = max(max(r.extra.get("load_avg", [0])) for r in rows)
    info["forwards_per_s_all"] = fwd_all
    del prep
    info["seconds"] = time.perf_counter() - started
    info["reference"] = f"legoc:{ref}"
    info["rows"] = rows
    info["targets"] = targets(info)
    return info


def find(rows, method):
    return next((r for r in rows if r.method == method and r.error is None), None)


def targets(info: dict) -> list[dict]:
    rows, keep = info["rows"], info["keep"]
    ref = find(rows, info["reference"])
    out = []

    def size_target(label, other_names, bound):
        others = [find(rows, n) for n in other_names]
        if ref is None or any(o is None for o in others):
            out.append({"target": label, "ratio": None, "status": "MISS", "why": "a method failed"})
            return
        base = min(o.params for o in others)
        ratio = ref.params / base
        faithful = ref.faith.get("search", 0) >= keep and all(
            o.faith.get("search", 0) >= keep for o in others
        )
        ok = ratio <= bound and ref.faith.get("search", 0) >= keep
        out.append(
            {
                "target": label,
                "ratio": ratio,
                "status": "PASS" if ok else "MISS",
                "why": "" if faithful else "not all at keep on search",
            }
        )

    name = info["reference"].split(":", 1)[1]
    size_target(f"{name} <= {TARGET_RANKING}x magnitude params", ["magnitude"], TARGET_RANKING)
    size_target(f"{name} <= {TARGET_RANKING}x taylor params", ["taylor"], TARGET_RANKING)
    size_target(f"{name} <= {TARGET_RANDOM}x random params (mean)", ["random"], TARGET_RANDOM)
    size_target(
        f"{name} <= {TARGET_PEER}x torch-pruning params (best of tp-*)",
        [r.method for r in rows if r.kind == "external" and r.error is None] or ["tp-magnitude"],
        TARGET_PEER,
    )
    if ref is not None and ref.evals_per_s():
        ratio = speed_ratio(ref, info["forwards_per_s"])
        fair = ref.evals_per_s() / ref.extra.get(
            "forwards_per_s_channels_last", info["forwards_per_s_channels_last"]
        )
        out.append(
            {
                "target": f"{name} evals/s >= {TARGET_SPEED}x forwards/s",
                "ratio": ratio,
                "status": "PASS" if ratio >= TARGET_SPEED else "MISS",
                "why": f"{fair:.2f}x channels-last forwards/s",
            }
        )
    else:
        out.append(
            {
                "target": f"{name} evals/s >= {TARGET_SPEED}x forwards/s",
                "ratio": None,
                "status": "MISS",
                "why": "reference method failed",
            }
        )
    return out


def speed_ratio(row: Row, default_fwd: float) -> float | None:
    """evals/s over plain forward passes/s, measured around this method's run."""
    eps = row.evals_per_s()
    return None if not eps else eps / row.extra.get("forwards_per_s", default_fwd)


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def print_table(info: dict) -> None:
    rows = info["rows"]
    ref = find(rows, info["reference"])
    splits = list(info["splits"])
    fwd = info["forwards_per_s"]
    print()
    print(f"== {info['model']}: {info['note']}")
    print(
        f"   metric {info['metric']}, keep {info['keep']}, budget {info['budget']} evaluations, "
        f"source {info['source_params']:,} params, {info['removable_groups']} removable "
        f"groups, splits {info['splits']}, full forward passes/s {fwd:.2f} (median; "
        f"{info['forwards_per_s_channels_last']:.2f} in channels-last layout) "
        f"({info['threads']} thread(s))"
    )
    if info["load_avg_max"] > info["threads"] + 0.75:
        print(
            f"   NOTE: 1-min load average reached {info['load_avg_max']:.1f} on "
            f"{os.cpu_count()} CPUs: other processes competed for the cores, so wall times are "
            "inflated; /fwd/s divides by forward rates measured right around each method"
        )
    header = [
        "method",
        "params",
        "x ref",
        *[f"f:{s}" for s in splits],
        "evals",
        "grads",
        "time s",
        "evals/s",
        "/fwd/s",
        "notes",
    ]
    table = [header]
    for r in rows:
        if r.error:
            table.append(
                [
                    r.method,
                    "ERROR",
                    "",
                    *["" for _ in splits],
                    "",
                    "",
                    fmt(r.seconds, ".1f"),
                    "",
                    "",
                    r.error,
                ]
            )
            continue
        ratio = r.params / ref.params if ref is not None and r.params is not None else None
        eps = r.evals_per_s()
        params = f"{r.params:,.0f}"
        table.append(
            [
                r.method,
                params,
                fmt(ratio, ".2f"),
                *[fmt(r.faith.get(s), ".3f") for s in splits],
                fmt(r.evaluations, ".0f" if float(r.evaluations or 0).is_integer() else ".1f"),
                fmt(r.gradient_passes, ".0f"),
                fmt(r.seconds, ".1f"),
                fmt(eps, ".2f"),
                fmt(speed_ratio(r, fwd), ".2f"),
                "; ".join(r.notes),
            ]
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    for k, row in enumerate(table):
        cells = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths))
        ]
        print("   " + "  ".join(cells) + "  " + str(row[-1]))
        if k == 0:
            print("   " + "-" * (sum(widths) + 2 * len(widths) + 5))
    summary = " | ".join(
        f"{t['target']}: {fmt(t['ratio'], '.2f')}x {t['status']}"
        + (f" ({t['why']})" if t["why"] else "")
        for t in info["targets"]
    )
    print(f"   SUMMARY {info['model']}: {summary}")
    print(f"   ({info['model']} took {info['seconds']:.0f} s)")


def to_json(info: dict) -> dict:
    out = {k: v for k, v in info.items() if k != "rows"}
    out["rows"] = [
        {k: v for k, v in vars(r).items()} | {"evals_per_s": r.evals_per_s()} for r in info["rows"]
    ]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        default=DEFAULT_MODELS,
        help=f"comma-separated subset of {','.join(ALL_MODELS)} or 'all' "
        f"(default {DEFAULT_MODELS})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small budgets (shapes/wide 150, cnn/planted 60), 6 tp steps",
    )
    parser.add_argument(
        "--budget",
        type=int,
        default=None,
        help="candidate-evaluation budget for every method (default: the spec's)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the random baseline")
    parser.add_argument("--seed", type=int, default=0, help="seed passed to legoc's searches")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (at most 2)")
    parser.add_argument(
        "--wide-steps",
        type=int,
        default=4000,
        help="Adam steps training the wide model (~30 s on 2 cores)",
    )
    parser.add_argument(
        "--workdir", default=None, help="folder for generated models/data (kept; reused if trained)"
    )
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated rows to run (e.g. legoc:mask,magnitude); the reference always runs",
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    names = (
        list(ALL_MODELS)
        if args.models == "all"
        else [m.strip() for m in args.models.split(",") if m.strip()]
    )
    unknown = [m for m in names if m not in CASES]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(ALL_MODELS)}")
    if args.seeds < 1 or (args.budget is not None and args.budget < 1):
        parser.error("--seeds and --budget must be >= 1")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="legoc-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(
        f"legoc {legoc.__version__}, torch {torch.__version__}, python "
        f"{platform.python_version()}; search methods {sorted(SEARCH_PASSES)}, "
        f"reference {reference_method()}; models {names}; quick={args.quick}",
        flush=True,
    )
    results = []

    def write_json(complete: bool) -> None:
        if not args.out:
            return
        payload = {
            "legoc": legoc.__version__,
            "torch": torch.__version__,
            "search_methods": sorted(SEARCH_PASSES),
            "quick": args.quick,
            "complete": complete,
            "seconds": time.perf_counter() - started,
            "models": [to_json(i) for i in results],
        }
        Path(args.out).write_text(json.dumps(payload, indent=1, default=_json_default))

    try:
        for name in names:
            info = run_model(name, work, args)
            print_table(info)
            results.append(info)
            write_json(complete=False)  # a long run keeps what it finished
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    print(f"\ntotal {total:.0f} s")
    write_json(complete=True)
    return 0


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
