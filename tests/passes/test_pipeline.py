"""`Pipeline`: parsed from a string and printed back, run in order with the failing pass named,
`changed` set by the passes; a search pass leaves the scorer as it found it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from legoc.errors import LegocError
from legoc.passes.base import (
    PassContext,
    PassFailed,
    PassOptionError,
    PassResult,
    Pipeline,
    PreconditionFailed,
)
from legoc.passes.registry import PASSES, extract_pipeline, parse_pipeline
from legoc.passes.rewrite import BLOCK_PIPELINE, SCORING_PIPELINE, layout_pipeline
from legoc.passes.search.minimize import Minimize
from legoc.passes.search.round_widths import RoundWidths
from legoc.scoring.budget import Budget
from tests.passes.helpers import case, run_search
from tests.passes.search.test_search_methods import KEEP, setup


@pytest.mark.parametrize(
    "text",
    [
        "auto,repair,minimize,round-widths{multiple=8},minimize,repair",
        "mcts{branching=4,exploration=0.5},repair",
        "magnitude{per_param=true},minimize",
        BLOCK_PIPELINE,
        SCORING_PIPELINE,
        "finetune{epochs=3,lr=0.01}",
    ],
)
def test_parse_then_str_round_trips(text):
    pipeline = parse_pipeline(text)
    assert str(pipeline) == text
    assert parse_pipeline(str(pipeline)) == pipeline


def test_options_are_typed_and_defaults_are_not_printed():
    pipeline = parse_pipeline("round-widths{multiple=16}, mcts{exploration=2}")
    assert pipeline.passes == (RoundWidths(multiple=16), PASSES["mcts"](exploration=2.0))
    assert str(pipeline) == "round-widths,mcts{exploration=2.0}"  # 16 is the default


def test_the_named_pipelines_parse():
    assert parse_pipeline(extract_pipeline("auto", 16)).names == [
        "auto",
        "repair",
        "minimize",
        "round-widths",
        "minimize",
        "repair",
    ]
    assert parse_pipeline(layout_pipeline(8)).names == ["align-channels", "dce"]
    assert {p.kind for p in parse_pipeline(BLOCK_PIPELINE).passes} == {"rewrite"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("auto,shrink", "unknown pass 'shrink'; passes are: "),
        ("mcts{depth=3}", "pass mcts: unknown option 'depth' (options: branching, "),
        ("mcts{branching=many}", "pass mcts: option branching='many' is not a int"),
        ("round-widths{multiple}", "pass round-widths: unknown option 'multiple'"),
        ("auto,,repair", "empty pass name"),
        ("mcts{branching=2", "unbalanced '{'"),
    ],
)
def test_an_unknown_pass_or_option_is_one_error_line(text, needle):
    with pytest.raises(PassOptionError) as error:
        parse_pipeline(text)
    assert needle in str(error.value) and "\n" not in str(error.value)
    assert isinstance(error.value, LegocError) and error.value.exit_code == 2


@dataclass(frozen=True)
class Noop:
    name = "noop"
    kind = "rewrite"

    def run(self, ir, ctx):
        return PassResult(ir, {"things_removed": 0}, changed=False)


@dataclass(frozen=True)
class Broken:
    name = "broken"
    kind = "rewrite"

    def run(self, ir, ctx):
        raise RuntimeError("boom")


def test_a_failing_pass_is_named_with_the_passes_before_it():
    pipeline = Pipeline.parse(
        "noop,dce,broken,dce", {"noop": Noop, "dce": PASSES["dce"], "broken": Broken}
    )
    with pytest.raises(PassFailed) as error:
        pipeline.run(case("planted"))
    assert str(error.value).startswith(
        "pass broken failed (RuntimeError: boom); passes run before it: noop, dce; this is a "
        "legoc bug"
    )


def test_changed_is_set_by_the_passes_and_a_second_run_changes_nothing():
    ir = case("planted")
    first = parse_pipeline(BLOCK_PIPELINE).run(ir)
    assert first.changed and dict(first.reports)["slice-units"]["params_removed"] > 0
    again = parse_pipeline(BLOCK_PIPELINE).run(first.ir)
    assert not again.changed
    assert Pipeline((Noop(),)).run(ir).changed is False


def test_every_pass_reports_its_name_and_ir_after_it():
    seen = []
    parse_pipeline(SCORING_PIPELINE).run(
        case("planted"), PassContext(after=lambda n, ir: seen.append(n))
    )
    assert seen == ["fold-ablations", "slice-units", "dce"]


def test_a_search_pass_without_a_scorer_fails_its_precondition():
    ir, _ = setup("mlp")
    with pytest.raises(PreconditionFailed, match="pass minimize: a search pass needs a scorer"):
        parse_pipeline("minimize").run(ir, PassContext(keep=KEEP))


@pytest.mark.parametrize("name", ["greedy", "mcts", "minimize", "magnitude"])
def test_a_search_pass_leaves_the_scorer_as_it_found_it(name):
    ir, scorer = setup("mlp")
    kept = ir.mask_for(ir.removable_groups()[:2])
    inputs = {"x": scorer.split.inputs["x"]}
    before = scorer.predict(kept, inputs)
    result = run_search(PASSES[name](), ir, scorer, KEEP, 60)
    assert result.changed == bool(set(result.ir.removed_groups()))
    assert torch.equal(scorer.predict(kept, inputs), before)  # the source model's outputs


def test_one_budget_counts_the_whole_pipeline():
    ir, scorer = setup("mlp")
    budget = Budget(40, scorer)
    ctx = PassContext(scorer, budget, KEEP)
    ran = parse_pipeline("greedy,repair,minimize,minimize,repair").run(ir, ctx)
    assert (
        budget.evaluations
        == scorer.evaluations
        == sum(stats.get("evaluations", 0) for _, stats in ran.reports)
    )
    assert budget.used <= 40 + sum(s["evaluations"] for n, s in ran.reports if n == "repair")


def test_a_pass_with_nothing_to_do_returns_unchanged_without_stats():
    ir, scorer = setup("mlp")
    ctx = PassContext(scorer, Budget(200, scorer), KEEP)
    first = Minimize().run(ir, ctx)
    assert first.stats["one_minimal"] == 1
    again = Minimize().run(first.ir, ctx)  # the context knows the kept set is 1-minimal
    assert again.changed is False and again.stats == {} and again.ir is first.ir
    skipped = RoundWidths().run(first.ir, ctx)  # the params objective: no widths to trade
    assert skipped.changed is False and skipped.stats == {}
    ran = parse_pipeline("minimize,round-widths").run(first.ir, ctx)
    assert ran.reports == [] and not ran.changed
