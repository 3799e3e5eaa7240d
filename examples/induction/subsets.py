"""Which heads a block keeps, and the faithfulness of every subset of the heads, scored the way
`legoc extract` scores a kept set: the task's scorer (its ablation, its metric, the `search`
split) on the IR's mask with the other heads' groups removed.

With 8 heads there are 255 non-empty subsets: few enough to score them all, so the card can
say whether the extracted set is the best of its size and which size first reaches `keep`.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import onnx

from legoc.ir.core import IR
from legoc.scoring.prepare import Prepared

HEAD_DIM = 8  # model.D_MODEL // model.HEADS: a head is 8 consecutive q/k/v channels


def head_of(space: str, channel: int) -> str | None:
    """ "L1H2" for a q channel of layer 1's head 2 (`layers.1.q`, channels 16..23)."""
    parts = space.split(".")
    if len(parts) != 3 or parts[0] != "layers" or parts[2] != "q":
        return None
    return f"L{parts[1]}H{channel // HEAD_DIM}"


def rationale(block: Path) -> dict:
    """The block's `legoc.rationale` metadata: kept units, totals, faithfulness on search."""
    meta = {p.key: p.value for p in onnx.load(str(block), load_external_data=False).metadata_props}
    return json.loads(meta["legoc.rationale"])


def kept_heads(block: Path) -> dict[str, bool]:
    """{"L0H2": kept?, ...} from the block's `legoc.rationale` (the q channels kept)."""
    units = rationale(block)
    heads = {}
    for space, total in sorted(units["total"].items()):
        if head_of(space, 0) is None:
            continue
        kept = set(units["kept"][space])
        for start in range(0, total, HEAD_DIM):
            heads[head_of(space, start)] = start in kept
    return heads


def head_groups(ir: IR) -> dict[str, int]:
    """{"L0H0": group index, ...}: each removable group of the IR named by the head of its q
    channels. A removable group that is not a head is an error (the check would miss it)."""
    heads = {}
    for index in ir.removable_groups():
        names = {head_of(space, unit) for space, unit in ir.groups[index].members} - {None}
        if len(names) != 1:
            raise ValueError(f"group {index} is not one attention head: {names or 'no q channel'}")
        heads[names.pop()] = index
    return dict(sorted(heads.items()))


def score_subsets(prep: Prepared) -> dict[frozenset[str], float]:
    """Faithfulness on `search` of every non-empty set of kept heads (the others ablated as the
    task says; units that are not heads are frozen, so always kept), exactly as extract reports
    it: the masked model (`exact`), not counted against a budget."""
    groups = head_groups(prep.ir)
    scores = {}
    for size in range(1, len(groups) + 1):
        for kept in itertools.combinations(groups, size):
            removed = [g for head, g in groups.items() if head not in kept]
            mask = prep.ir.mask_for(removed)
            scores[frozenset(kept)] = prep.scorer.faithfulness(mask, count=False, exact=True)
    return scores


def best_by_size(scores: dict[frozenset[str], float]) -> dict[int, tuple[frozenset[str], float]]:
    """{size: (the most faithful set of that size, its faithfulness)}; ties go to the set
    whose sorted names come first, so the answer does not depend on dict order."""
    best: dict[int, tuple[frozenset[str], float]] = {}
    for heads, faith in sorted(scores.items(), key=lambda item: sorted(item[0])):
        size = len(heads)
        if size not in best or faith > best[size][1]:
            best[size] = (heads, faith)
    return dict(sorted(best.items()))


def smallest_reaching(scores: dict[frozenset[str], float], keep: float) -> int | None:
    """The fewest heads of any set whose faithfulness reaches `keep` (None: no set does)."""
    sizes = [len(heads) for heads, faith in scores.items() if faith >= keep]
    return min(sizes, default=None)


def in_every(
    scores: dict[frozenset[str], float], keep: float, size: int | None = None
) -> frozenset[str]:
    """The heads that every set reaching `keep` holds (of `size` heads, if given)."""
    reaching = [h for h, f in scores.items() if f >= keep and size in (None, len(h))]
    return frozenset.intersection(*reaching) if reaching else frozenset()


def rank_of(scores: dict[frozenset[str], float], heads: frozenset[str]) -> int:
    """1 + how many sets of the same size are strictly more faithful than `heads`."""
    mine = scores[heads]
    return 1 + sum(f > mine for h, f in scores.items() if len(h) == len(heads))


def names(heads) -> str:
    return "{" + ", ".join(sorted(heads)) + "}"
