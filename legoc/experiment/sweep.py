"""The size curve's bookkeeping: keep levels, the variants B is searched in (plain, each scope
set, the validation guard), and one chain of searches per variant and seed.

Work is shared where it can be: the model, data, trace, ablation means and reference scores
are prepared once (a scope set only re-analyses the traced graph; a held-out validate part
only re-scores the reference); and the levels of one seed form a chain, strictest first, each
search starting from the rationale of the level before it (a looser keep can only remove
more). So the rationales of one seed are nested and the later searches are over what is left.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from legoc import api
from legoc.errors import LegocError
from legoc.experiment.result import PLAIN
from legoc.ir.core import IR
from legoc.scoring.guard import Held, hold_out
from legoc.scoring.scorer import Scorer

GUARD = "guard"
_LAYER = re.compile(r"^(.*?\.\d+)(?:\.|$)")  # a module path up to its first numeric part


@dataclass
class Level:
    """One link of a chain: the keep level, its preparation, what its search found, and how
    many units the rationale it started from kept (None: it started from the full model)."""

    keep: float
    prep: api.Prepared
    found: api.Found
    started_from: int | None
    seconds: float = 0.0  # the search's wall time


@dataclass
class Variant:
    """One way of searching B: its preparation, the options it runs, its held-out part."""

    name: str
    prep: api.Prepared
    options: tuple[str, ...]  # plain: B, C, A; a scope set: B, C; the guard: B
    held: Held | None = None
    scope: list[str] | None = None

    def gap(self, kept: dict[str, np.ndarray]) -> dict[str, float]:
        """Faithfulness on the search and validate parts and their gap ({} without --validate)."""
        return self.held.gap(kept) if self.held is not None else {}


def levels_strictest_first(levels: list[float]) -> list[float]:
    return sorted(levels, reverse=True)


def build_variants(
    prep: api.Prepared,
    scope_sets: dict[str, list[str]] | None,
    validate: float | None,
    validate_seed: int,
) -> list[Variant]:
    """plain (A, B, C), one per scope set (B, C) and, with `validate`, the guard (B). With
    `validate` every variant searches on the search part only, so the guard's comparison is
    on equal data and every block has a search-vs-validate gap."""

    def held(base: api.Prepared) -> tuple[api.Prepared, Held | None]:
        if validate is None:
            return base, None
        part = hold_out(base, validate, validate_seed, guard=False)
        return part.prep, part

    plain_prep, plain_part = held(prep)
    out = [Variant(PLAIN, plain_prep, ("B", "C", "A"), plain_part)]
    for name, globs in (scope_sets or {}).items():
        part_prep, part = held(scoped(prep, name, globs))
        out.append(Variant(name, part_prep, ("B", "C"), part, list(globs)))
    if plain_part is not None:  # the plain variant's parts and scorers, guarded
        guarded = plain_part.guarded()
        out.append(Variant(GUARD, guarded.prep, ("B",), guarded))
    return out


def scoped(prep: api.Prepared, name: str, globs: list[str]) -> api.Prepared:
    """`prep` with pruning restricted to the modules `globs` match (the spec's scope replaced):
    the traced graph is re-analysed, the data and the model are shared."""
    ir = IR(
        gm=copy.deepcopy(prep.ir.gm),
        input_names=list(prep.ir.input_names),
        example_inputs=prep.ir.example_inputs,
        scope=list(globs),
        objective=prep.ir.objective,
    )
    if not ir.removable_groups():
        raise LegocError(
            f"--scope-sets {name}={','.join(globs)}: matches no prunable module; prunable "
            f"modules are {sorted(prep.ir.spaces)}"
        )
    scorer = Scorer(ir, prep.splits["search"], prep.metric, prep.task.spec.ablation)
    return dataclasses.replace(prep, ir=ir, scorer=scorer, eval_scorers={})


def at_keep(prep: api.Prepared, keep: float, start: IR | None = None) -> api.Prepared:
    """`prep` searching for `keep` (the blocks' metadata says so) from `start`'s kept set."""
    spec = prep.task.spec.model_copy(update={"keep": keep})
    task = dataclasses.replace(prep.task, spec=spec)
    return dataclasses.replace(prep, task=task, ir=start if start is not None else prep.ir)


def chained_searches(
    variant: Variant,
    levels: list[float],
    seed: int,
    method: str,
    budget: int,
    progress: Callable[[float, str, int, int], None] | None = None,
) -> Iterator[Level]:
    """One `Level` per keep level, strictest first; each search starts from the last
    rationale that met its keep (the full model at first)."""
    start: IR | None = None
    for keep in levels_strictest_first(levels):
        level_prep = at_keep(variant.prep, keep, start)

        def report(stage: str, done: int, total: int, keep: float = keep) -> None:
            if progress is not None:
                progress(keep, stage, done, total)

        started = time.perf_counter()
        found = api.search_rationale(level_prep, method, budget, seed, report)
        seconds = time.perf_counter() - started
        yield Level(keep, level_prep, found, None if start is None else _kept_count(start), seconds)
        if found.faithfulness >= keep:
            start = found.ir


def _kept_count(ir: IR) -> int:
    return int(sum(int(mask.sum()) for mask in ir.kept.values()))


def layer_of(module: str) -> str:
    """The layer a module belongs to: its path up to the first numeric part
    (`encoder.layer.3.attention.self` -> `encoder.layer.3`), else the module itself."""
    match = _LAYER.match(module)
    return match.group(1) if match else module


def layer_shares(kept: dict[str, np.ndarray], sizes: dict[str, int]) -> dict[str, float]:
    """Share of units kept per layer (all prunable units of its modules together). `sizes`:
    every prunable module's unit count; one outside the search's scope counts as kept whole."""
    counts: dict[str, list[int]] = {}
    for module, size in sizes.items():
        mask = kept.get(module)
        pair = counts.setdefault(layer_of(module), [0, 0])
        pair[0] += size if mask is None else int(np.asarray(mask).sum())
        pair[1] += size
    return {layer: k / n for layer, (k, n) in counts.items() if n}


def chance_level(metric: str, y) -> float | None:
    """Accuracy of always answering the most frequent label (None: the metric has no chance
    level, or the split has no labels)."""
    if metric != "accuracy" or y is None:
        return None
    labels = np.asarray(y).reshape(-1)
    labels = labels[labels != -100]
    if labels.size == 0:
        return None
    _, counts = np.unique(labels, return_counts=True)
    return float(counts.max() / labels.size)


def size_axis(module) -> str:
    """`macs` when embedding tables hold most of the model's parameters (their rows cost no
    multiply-adds, so params would put every block at the table's size), else `params`."""
    import torch

    total = sum(p.numel() for p in module.parameters())
    embedded = sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Embedding))
    return "macs" if total and embedded / total > 0.5 else "params"
