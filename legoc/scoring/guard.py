"""The over-fitting guard: hold out a seeded part of the search data as `validate` and accept a
candidate only when it is faithful on both parts.

A rationale pruned to the floor of `keep` on the search data tends to fit those rows only (the
trap DESIGN.md section 5 describes). The guard never looks at an eval split: `validate` is cut
from `search`. Every search pass accepts a candidate when `scorer.faithfulness(...) >= keep`,
so a scorer whose faithfulness is the lower of the two parts' guards every pass at once,
without touching any of them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from legoc.errors import LegocError
from legoc.scoring.checks import check_measurable_gap
from legoc.scoring.prepare import Prepared
from legoc.scoring.scorer import Scorer
from legoc.task.data import Split

SEARCH_LABEL = "data.search (search part)"
VALIDATE_LABEL = "data.search (validate part)"


def split_validate(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(search part, validate part): a seeded `fraction` of the rows held out, row order kept."""
    n = len(split)
    held = round(fraction * n)
    if not 0 < fraction < 1 or held < 1 or held >= n:
        raise LegocError(
            f"validate {fraction:g}: must leave at least one row on each side of {n} search "
            "rows; use a fraction in (0, 1), e.g. 0.2"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    validate = torch.sort(order[:held]).values
    search = torch.sort(order[held:]).values
    return _rows(split, search, split.name), _rows(split, validate, "validate")


def _rows(split: Split, rows: torch.Tensor, name: str) -> Split:
    inputs, y, extras = split.take(rows)
    return Split(name, inputs, y, extras)


class GuardedScorer:
    """The search part's scorer, except that faithfulness is min(search, validate).

    Everything else (gradients, stand-ins, ablation values, the budget's counts) is the search
    part's: the validate part is only ever scored, never trained on. A candidate that already
    misses keep on the search part is not scored on validate (same verdict, less work)."""

    def __init__(self, search: Scorer, validate: Scorer):
        self.search, self.validate = search, validate
        self.validate_evaluations = 0

    def __getattr__(self, name: str):
        return getattr(self.search, name)

    @property
    def journal(self):
        return self.search.journal

    @journal.setter
    def journal(self, value) -> None:  # --resume records the search part's evaluations
        self.search.journal = value

    def faithfulness(
        self,
        kept: dict[str, np.ndarray],
        count: bool = True,
        keep: float | None = None,
        exact: bool = False,
        base=None,
    ) -> float:
        value = self.search.faithfulness(kept, count=count, keep=keep, exact=exact, base=base)
        if keep is not None and value < keep:
            return value
        self.validate_evaluations += 1
        held = self.validate.faithfulness(kept, count=False, keep=keep, exact=exact, base=base)
        return min(value, held)

    def gap(self, kept: dict[str, np.ndarray]) -> dict[str, float]:
        """Exact faithfulness on both parts and their difference (search - validate): the
        over-fitting a block carries."""
        return faithfulness_gap(self.search, self.validate, kept)


def faithfulness_gap(search: Scorer, validate: Scorer, kept: dict) -> dict[str, float]:
    on_search = search.faithfulness(kept, count=False, exact=True)
    on_validate = validate.faithfulness(kept, count=False, exact=True)
    return {
        "faithfulness_search": on_search,
        "faithfulness_validate": on_validate,
        "overfit_gap": on_search - on_validate,
    }


@dataclasses.dataclass
class Held:
    """A preparation whose search data lost its validate part, and that part's scorer."""

    prep: Prepared  # scorer: the search part's (plain) or the guarded one
    search: Scorer
    validate: Scorer

    def gap(self, kept: dict) -> dict[str, float]:
        return faithfulness_gap(self.search, self.validate, kept)

    def guarded(self) -> Held:
        """The same parts and scorers (nothing re-scored), accepting only candidates faithful
        on both."""
        guard = GuardedScorer(self.search, self.validate)
        return Held(dataclasses.replace(self.prep, scorer=guard), self.search, self.validate)


def hold_out(prep: Prepared, fraction: float, seed: int, guard: bool) -> Held:
    """`prep` searching on the search part only; with `guard`, accepting only candidates
    faithful on the validate part too. Ablation values come from the search part."""
    search_split, validate_split = split_validate(prep.splits["search"], fraction, seed)
    spec = prep.task.spec
    search = Scorer(prep.ir, search_split, prep.metric, spec.ablation, label=SEARCH_LABEL)
    validate = Scorer(  # no prefix cache: it would hold on to every stand-in it saw
        prep.ir,
        validate_split,
        prep.metric,
        values=search.values,
        label=VALIDATE_LABEL,
        cache_bytes=0,
    )
    for part in (search, validate):  # a part too small to measure faithfulness on is an error
        check_measurable_gap(prep.metric, part.reference.full, part.reference.empty, part.label)
    scorer = GuardedScorer(search, validate) if guard else search
    return Held(dataclasses.replace(prep, scorer=scorer, eval_scorers={}), search, validate)
