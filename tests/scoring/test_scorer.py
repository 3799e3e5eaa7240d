"""Metrics, faithfulness and the Scorer (legoc/task/metrics.py, legoc/scoring/scorer.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from legoc.errors import LegocError
from legoc.frontend.load import trace
from legoc.ir.core import build_ir
from legoc.scoring.scorer import Scorer
from legoc.task.metrics import METRICS, faithfulness
from legoc.task.spec import Split
from tests.helpers import assert_float_close, labelled_data, trained_model

LOGITS = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 5.0], [4.0, 0.0, 0.0]])
LABELS = torch.tensor([0, 2, 2, 1])


def scorer_for(kind: str, metric: str = "accuracy", n: int = 96, **options) -> Scorer:
    """A Scorer of the trained tiny model on its labelled search data."""
    outputs = [0, 3] if kind == "cnn" else None
    model = trained_model(kind)
    data = labelled_data(kind, n, 1, outputs)
    ir = build_ir(trace(model, ["x"]), ["x"], {"x": data["x"][:2]}, outputs=outputs)
    return Scorer(ir, Split("search", {"x": data["x"]}, data["y"]), METRICS[metric], **options)


# -- metrics on hand-made logits -----------------------------------------------------------


def test_accuracy_counts_argmax_hits():
    # argmax per row: 0, 1, 2, 0 against labels 0, 2, 2, 1
    assert METRICS["accuracy"].batch_sum(LOGITS, LABELS, None) == (2.0, 4)


def test_logit_diff_is_the_label_logit_minus_the_best_other():
    # 2-1, 1-3, 5-1, 0-4
    assert METRICS["logit_diff"].batch_sum(LOGITS, LABELS, None) == (1 - 2 + 4 - 4, 4)
    # against given alternatives 1, 0, 0, 2: 2-1, 1-0, 5-1, 0-0
    alt = torch.tensor([1, 0, 0, 2])
    assert METRICS["logit_diff"].batch_sum(LOGITS, LABELS, None, alt) == (1 + 1 + 4 + 0, 4)


def test_kl_to_the_reference_outputs():
    kl = METRICS["kl"]
    assert kl.batch_sum(LOGITS, None, LOGITS) == (0.0, 4)
    # reference (1/2, 1/2) against current (3/4, 1/4): 1/2 log(2/3) + 1/2 log 2 = 1/2 log(4/3)
    total, count = kl.batch_sum(
        torch.tensor([[math.log(3.0), 0.0]]), None, torch.tensor([[0.0, 0.0]])
    )
    assert count == 1
    assert total == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)


def test_mse_sums_squared_errors_per_element():
    out = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    assert METRICS["mse"].batch_sum(out, target, None) == (0 + 4 + 9 + 0, 4)


def test_metric_directions():
    assert METRICS["accuracy"].higher_is_better and METRICS["logit_diff"].higher_is_better
    assert not METRICS["kl"].higher_is_better and not METRICS["mse"].higher_is_better
    assert METRICS["kl"].needs_reference and not METRICS["kl"].needs_labels


# -- faithfulness definitions (DESIGN §3.2) ----------------------------------------------------


def test_faithfulness_of_a_higher_is_better_metric_is_the_ratio():
    assert faithfulness(METRICS["accuracy"], 0.45, full=0.5, empty=0.1) == pytest.approx(0.9)
    assert faithfulness(METRICS["logit_diff"], 3.0, full=2.0, empty=-1.0) == pytest.approx(1.5)


def test_faithfulness_of_a_lower_is_better_metric_is_the_recovered_share():
    # (empty - r) / (empty - full)
    assert faithfulness(METRICS["kl"], 0.2, full=0.0, empty=1.0) == pytest.approx(0.8)
    assert faithfulness(METRICS["mse"], 3.0, full=1.0, empty=11.0) == pytest.approx(0.8)
    assert faithfulness(METRICS["mse"], 1.0, full=1.0, empty=11.0) == pytest.approx(1.0)
    assert faithfulness(METRICS["mse"], 11.0, full=1.0, empty=11.0) == pytest.approx(0.0)


def test_faithfulness_when_the_empty_model_is_as_good_as_the_full_one():
    assert faithfulness(METRICS["mse"], 2.0, full=2.0, empty=2.0) == 1.0
    assert faithfulness(METRICS["mse"], 2.5, full=2.0, empty=2.0) == 0.0


# -- the Scorer ------------------------------------------------------------------------------


def producer_means(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-unit means of every Linear/Conv output over rows (and positions), by forward hooks."""
    means, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):

            def hook(_, __, out, name=name):
                dims = [d for d in range(out.dim()) if d != 1]
                means[name] = out.double().mean(dim=dims)

            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for handle in hooks:
        handle.remove()
    return means


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_mean_ablation_values_are_the_producers_mean_outputs(kind):
    scorer = scorer_for(kind, batch_size=7)
    expected = producer_means(trained_model(kind), scorer.split.inputs["x"])
    assert scorer.values.keys() == expected.keys()
    for name, value in expected.items():
        assert_float_close(scorer.values[name], value)  # batched float32 sums vs float64


def test_zero_ablation_values_are_zero():
    scorer = scorer_for("cnn", ablation="zero")
    assert all(not v.any() for v in scorer.values.values())
    assert scorer.values["conv1"].shape == (6,)


@pytest.mark.parametrize("metric", ["accuracy", "kl", "logit_diff"])
def test_scoring_in_batches_equals_one_big_batch(metric):
    small, big = scorer_for("cnn", metric, batch_size=7), scorer_for("cnn", metric, batch_size=1000)
    # batches of 7 and of 1000 sum the rows in another order: equal up to float32 rounding
    for name in big.values:
        assert_float_close(small.values[name], big.values[name])
    assert_float_close(small.reference.full, big.reference.full)
    assert_float_close(small.reference.empty, big.reference.empty)
    ir = big.ir
    mask = ir.mask_for(ir.removable_groups()[::3])
    assert_float_close(small.score(mask), big.score(mask))


def test_reference_scores_are_the_full_and_the_empty_model():
    scorer = scorer_for("mlp")
    x, y = scorer.split.inputs["x"], scorer.split.y
    with torch.no_grad():
        direct = (trained_model("mlp")(x).argmax(-1) == y).sum().item() / len(x)
    assert scorer.reference.full == pytest.approx(direct, abs=1e-12) == pytest.approx(1.0)
    everything = scorer.ir.mask_for(scorer.ir.removable_groups())
    assert scorer.reference.empty == scorer.score(everything, count=False)
    assert scorer.faithfulness(scorer.ir.mask_for([]), count=False) == 1.0


def test_kl_reference_of_the_full_model_is_zero():
    scorer = scorer_for("cnn", "kl")
    assert scorer.reference.full == pytest.approx(0.0, abs=1e-7)
    assert scorer.reference.empty > 0
    assert scorer.faithfulness(scorer.ir.mask_for([]), count=False) == pytest.approx(1.0)


def test_the_scorer_counts_only_counted_scores():
    scorer = scorer_for("mlp")
    assert scorer.evaluations == 0  # the references are not candidates
    mask = scorer.ir.mask_for([0, 9])
    scorer.score(mask, count=False)
    scorer.faithfulness(mask, count=False)
    scorer.attribution(mask)
    assert scorer.evaluations == 0
    scorer.score(mask)
    scorer.faithfulness(mask)
    assert scorer.evaluations == 2


def test_scoring_a_mask_ablates_exactly_the_removed_units():
    scorer = scorer_for("mlp")
    ir = scorer.ir
    mask = ir.mask_for([0, 9])
    x = scorer.split.inputs["x"]
    model = trained_model("mlp")

    def ablate_fc1_0(_, __, out):
        out = out.clone()
        out[:, 0] = scorer.values["fc1"][0]
        return out

    def ablate_fc2_1(_, __, out):
        out = out.clone()
        out[:, 1] = scorer.values["fc2"][1]
        return out

    hooks = [
        model.fc1.register_forward_hook(ablate_fc1_0),
        model.fc2.register_forward_hook(ablate_fc2_1),
    ]
    with torch.no_grad():
        expected = (model(x).argmax(-1) == scorer.split.y).sum().item() / len(x)
    for handle in hooks:
        handle.remove()
    assert ir.groups[9].members == (("fc2", 1),)
    assert scorer.score(mask, count=False) == pytest.approx(expected, abs=1e-12)


def test_labels_outside_the_outputs_are_an_error():
    model = trained_model("mlp")
    data = labelled_data("mlp", 16, 1)
    ir = build_ir(trace(model, ["x"]), ["x"], {"x": data["x"][:2]}, outputs=[0, 1])
    y = torch.full((16,), 3)  # labels index into `outputs`: only 0 and 1 exist
    with pytest.raises(LegocError, match=r"labels 'y' range over \[3, 3\]"):
        Scorer(ir, Split("search", {"x": data["x"]}, y), METRICS["accuracy"])


def test_a_full_model_scoring_zero_makes_faithfulness_undefined():
    model = trained_model("mlp")
    data = labelled_data("mlp", 16, 1)
    ir = build_ir(trace(model, ["x"]), ["x"], {"x": data["x"][:2]})
    wrong = torch.from_numpy((data["y"].numpy() + 1) % 4)  # every label wrong
    with pytest.raises(LegocError, match="faithfulness"):
        Scorer(ir, Split("search", {"x": data["x"]}, wrong), METRICS["accuracy"])
    assert np.all(wrong.numpy() != data["y"].numpy())


def test_scoring_on_a_sliced_base_equals_the_masked_source_model():
    """A stand-in (Scorer.stand_in) scores supersets of a removal on the sliced model: it must
    be the same function as the masked source model (BatchNorm included), not merely close."""
    model = trained_model("cnn")
    data = labelled_data("cnn", 96, seed=5)
    ir = build_ir(trace(model, ["x"]), ["x"], {"x": data["x"][:2]})
    scorer = Scorer(ir, Split("search", {"x": data["x"]}, data["y"]), METRICS["accuracy"])
    rng = np.random.default_rng(0)
    removable = ir.removable_groups()
    base_removed = list(rng.choice(removable, size=4, replace=False))
    base = scorer.stand_in(ir.mask_for(base_removed))
    for _ in range(5):
        extra = list(rng.choice(removable, size=3, replace=False))
        kept = ir.mask_for(sorted(set(base_removed) | set(extra)))
        assert base.covers(kept)
        via_base = scorer.predict(kept, {"x": data["x"]}, base=base)
        exact = scorer.predict(kept, {"x": data["x"]}, base=base, exact=True)
        assert_float_close(via_base, exact, steps=64)  # sliced vs masked: rounding per layer


def test_a_stand_in_is_a_cache_by_mask_not_routing_state():
    """Asking for a stand-in changes no later score: only calls that pass it use it."""
    model = trained_model("cnn")
    data = labelled_data("cnn", 96, seed=5)
    ir = build_ir(trace(model, ["x"]), ["x"], {"x": data["x"][:2]})
    scorer = Scorer(ir, Split("search", {"x": data["x"]}, data["y"]), METRICS["accuracy"])
    removed = ir.removable_groups()[:3]
    kept = ir.mask_for(removed + ir.removable_groups()[3:5])
    before = scorer.predict(kept, {"x": data["x"]})
    base = scorer.stand_in(ir.mask_for(removed))
    assert scorer.stand_in(ir.mask_for(removed)) is base  # cached by mask
    assert scorer.stand_in(ir.mask_for([])) is None  # nothing removed: the source itself
    assert torch.equal(scorer.predict(kept, {"x": data["x"]}), before)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_prefix_cache_scores_a_sweep_from_the_first_changed_layer_with_the_same_values(kind):
    """Removing one group at a time from one mask: later candidates start at the cut of the
    space they change, and every value equals a scoring without any cache."""
    import legoc.scoring.scorer as scoring

    cached = scorer_for(kind, "kl", n=300)
    ir = cached.ir
    rng = np.random.default_rng(3)
    base = list(rng.choice(ir.removable_groups(), size=3, replace=False))
    sweep = [g for g in ir.removable_groups() if g not in base][:12]
    masks = [ir.mask_for(sorted(set(base) | {g})) for g in sweep]
    got = [cached.score(m, count=False) for m in masks]
    assert cached.prefix_stats["hits"] > 0
    original = scoring.PREFIX_CACHE_BYTES
    try:
        scoring.PREFIX_CACHE_BYTES = 0  # nothing fits: every batch runs from the inputs
        plain = scorer_for(kind, "kl", n=300)
        want = [plain.score(m, count=False) for m in masks]
        assert plain.prefix_stats["hits"] == 0
    finally:
        scoring.PREFIX_CACHE_BYTES = original
    assert got == want  # bit-identical, not merely close


def test_release_drops_cut_values_and_the_stand_in_and_scores_stay_the_same():
    scorer = scorer_for("mlp", "kl", n=300)
    ir = scorer.ir
    removed = sorted(ir.removable_groups())[:3]
    mask = ir.mask_for(removed)
    base = scorer.stand_in(mask)
    before = [scorer.score(mask, count=False), scorer.score(mask, count=False, base=base)]
    assert sum(c.bytes for c in scorer._prefix.values()) > 0
    scorer.release()
    assert sum(c.bytes for c in scorer._prefix.values()) == 0
    assert scorer._stand_ins == {}
    assert [scorer.score(mask, count=False), scorer.score(mask, count=False, base=base)] == before


def test_gradient_batches_stay_within_their_activation_budget(monkeypatch):
    """Attribution reads the split in batches whose activations fit GRADIENT_BUDGET_BYTES
    (backward keeps them all); the scores are sums over rows, so they do not change."""
    import legoc.scoring.batching as batching

    whole = scorer_for("mlp", "kl", n=300)
    kept = whole.ir.mask_for(sorted(whole.ir.removable_groups())[:2])
    want = whole.attribution(kept)
    assert whole.batching.gradient_rows == 128  # a small model: the default batch
    monkeypatch.setattr(batching, "GRADIENT_BUDGET_BYTES", 0)  # nothing fits: one row at least
    small = scorer_for("mlp", "kl", n=300)
    assert small.batching.gradient_rows == 1
    sizes = [len(rows) for rows, *_ in small.batching.labelled(None, gradient=True)]
    assert sizes == [1] * 300
    got = small.attribution(kept)
    for name in want:
        assert_float_close(torch.from_numpy(got[name]), torch.from_numpy(want[name]))


# -- cheaper candidates: channels-last layout, pass-through ablation, hardest rows first ---------


def test_accuracy_hardness_is_minus_the_margin_of_the_right_class():
    # margins: 2-1, 1-3, 5-1, 0-4 -> hardness -1, 2, -4, 4
    got = METRICS["accuracy"].row_hardness(LOGITS, LABELS, None)
    assert got.tolist() == [-1.0, 2.0, -4.0, 4.0]


def test_lower_is_better_hardness_is_the_item_value():
    out = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    got = METRICS["mse"].row_hardness(out, torch.zeros(2, 2), None)
    assert got.tolist() == [5.0, 34.0]


def test_ablate_passes_activations_through_when_nothing_is_removed():
    from legoc.ir.ops import Ablate

    module = Ablate(3, 1, 2)
    x = torch.randn(4, 3)
    assert module(x) is x
    module.set(torch.tensor([True, False, True]), torch.tensor([0.0, 7.0, 0.0]))
    assert module(x)[:, 1].tolist() == [7.0] * 4
    module.set(torch.ones(3, dtype=torch.bool))
    assert module(x) is x


def test_conv_models_are_scored_in_channels_last_layout_with_the_same_values():
    import legoc.scoring.scorer as scoring

    fast = scorer_for("cnn", "kl", n=120)
    assert {n: m.channels_last for n, m in fast.ablates.items()} == {
        n: m.ndim == 4 for n, m in fast.ablates.items()
    }
    assert any(m.channels_last for m in fast.ablates.values())
    assert not any(m.channels_last for m in scorer_for("mlp").ablates.values())
    ir = fast.ir
    masks = [ir.mask_for(ir.removable_groups()[i::4]) for i in range(4)]
    original = scoring.prefer_channels_last
    try:
        scoring.prefer_channels_last = lambda gm, ablates: None
        plain = scorer_for("cnn", "kl", n=120)
    finally:
        scoring.prefer_channels_last = original
    for name in plain.values:
        assert_float_close(fast.values[name], plain.values[name], steps=64)  # other kernels
    for mask in masks:
        assert_float_close(fast.score(mask, count=False), plain.score(mask), steps=64)


def test_after_an_attribution_the_rows_it_finds_hardest_are_scored_first():
    scorer = scorer_for("cnn", "accuracy", n=400, batch_size=16)
    ir = scorer.ir
    parent = ir.mask_for(ir.removable_groups()[:2])
    at_start = scorer.row_order  # the full model's hardest rows first
    assert sorted(at_start.tolist()) == list(range(400))
    scorer.attribution(parent)
    order = scorer.row_order
    assert sorted(order.tolist()) == list(range(400))
    with torch.no_grad():
        logits = scorer.predict(parent, {"x": scorer.split.inputs["x"]})
    hardness = METRICS["accuracy"].row_hardness(logits, scorer.split.y, None)
    assert torch.all(hardness[order][:-1] >= hardness[order][1:])  # descending
    # a sweep of single removals from the parent (what minimize scores): same verdicts and
    # values for candidates that pass, fewer rows read for those that fail
    plain = scorer_for("cnn", "accuracy", n=400, batch_size=16)
    keep = scorer.faithfulness(parent, count=False) - 0.01
    sweep = [g for g in ir.removable_groups()[2:]]
    read = {}
    for name, s in (("ordered", scorer), ("plain", plain)):
        seen = []
        take, batches = s.split.take, s.split.batches
        s.split.take = lambda rows, _take=take, seen=seen: seen.append(len(rows)) or _take(rows)

        def counted(*args, _batches=batches, seen=seen):
            for batch in _batches(*args):
                seen.append(len(next(iter(batch[0].values()))))
                yield batch

        s.split.batches = counted
        verdicts, failing_rows = [], 0
        for g in sweep:
            before = sum(seen)
            value = s.faithfulness(ir.mask_for([*ir.removable_groups()[:2], g]), keep=keep)
            verdicts.append((value >= keep, value if value >= keep else None))
            failing_rows += 0 if value >= keep else sum(seen) - before
        s.split.take, s.split.batches = take, batches
        read[name] = (failing_rows, verdicts)
    assert read["ordered"][1] == read["plain"][1]
    assert any(ok for ok, _ in read["plain"][1]) and not all(ok for ok, _ in read["plain"][1])
    assert read["ordered"][0] < 0.8 * read["plain"][0]


def test_attribution_on_a_stand_in_with_every_unit_removed_scores_zero():
    """When the emptied model already meets keep, minimize ranks an all-removed mask on its
    sliced stand-in, whose output no kept unit reaches: every attribution is 0, no backward
    through a graph without gradients (GoogLeNet, MobileNetV2 crashed; issue 15)."""
    model = trained_model("cnn")
    data = labelled_data("cnn", 32, seed=5)
    ir = build_ir(trace(model, ["x"]), ["x"], {"x": data["x"][:2]})
    scorer = Scorer(ir, Split("search", {"x": data["x"]}, data["y"]), METRICS["accuracy"])
    empty = ir.mask_for(ir.removable_groups())
    base = scorer.stand_in(empty)
    scores = scorer.attribution(empty, base=base)
    assert set(scores) == set(ir.spaces)
    assert all(not values.any() for values in scores.values())


def test_prefix_cache_carries_values_that_cross_several_cuts():
    """A dense block reads the stem's output after every later layer's cut: a pass from a
    cached cut hands it on to the cuts after it (it was lost: KeyError on DenseNet-121)."""
    import legoc.scoring.scorer as scoring
    from tests.ir.zoo.blocks import make_block_net

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 8, 8, generator=gen)
    y = torch.randint(0, 4, (64,), generator=gen)
    ir = build_ir(trace(make_block_net("densenet"), ["x"]), ["x"], {"x": x[:2]})

    def sweep_scores() -> tuple[list[float], int]:
        scorer = Scorer(ir, Split("search", {"x": x}, y), METRICS["kl"])
        masks = [ir.mask_for([g]) for g in ir.removable_groups()[::-5]]
        return [scorer.score(m, count=False) for m in masks], scorer.prefix_stats["hits"]

    got, hits = sweep_scores()
    assert hits > 0
    original = scoring.PREFIX_CACHE_BYTES
    try:
        scoring.PREFIX_CACHE_BYTES = 0  # every batch from the inputs
        want, plain_hits = sweep_scores()
    finally:
        scoring.PREFIX_CACHE_BYTES = original
    assert plain_hits == 0 and got == want
