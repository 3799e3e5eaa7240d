"""Commands for the A/B/C experiment: `baseline` (option A alone) and `compare` (A, B and C).

Thin over `legoc.baseline` and `legoc.compare`: parse, call one function, print."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from legoc.cli.common import progress_reporter, reporting
from legoc.experiment.baseline import DEFAULT_EPOCHS, DEFAULT_LR

DebugOpt = typer.Option(False, "--debug", help="Show tracebacks and debug logs.")
QuietOpt = typer.Option(
    False, "--quiet", "-q", help="No progress bars or status lines (errors and warnings only)."
)
JsonOpt = typer.Option(False, "--json", help="Print the result as JSON.")
TaskOpt = typer.Option(..., "--task", help="Task spec (YAML, schema version 1).")
FamilyOpt = typer.Option(
    None, "--family", help="mlp | cnn | transformer (default: chosen from the input data)."
)


def register_compare_commands(app: typer.Typer) -> None:
    app.command("baseline")(baseline)
    app.command("compare")(compare)


def baseline(
    task: Path = TaskOpt,
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the ONNX block."),
    like: Path | None = typer.Option(
        None, "--like", help="Match this block's parameter count (and its input/output names)."
    ),
    params: list[int] = typer.Option(
        [], "--params", help="Target parameter count; repeat for several (OUT-<n>.onnx each)."
    ),
    family: str | None = FamilyOpt,
    epochs: int = typer.Option(
        DEFAULT_EPOCHS, min=1, help="Maximum epochs (early stopping may end sooner)."
    ),
    lr: float = typer.Option(DEFAULT_LR, min=0.0, help="Adam learning rate."),
    seed: int = typer.Option(0, help="Seed for initialisation, shuffling and the validation part."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Option A: train a small network on the task's search data.

    From scratch, on `search` only; sized like a block (--like) or to given sizes (--params)."""
    from legoc.experiment.baseline import baseline as train

    with reporting(debug):
        results = train(
            task, output, like=like, sizes=params, family=family, epochs=epochs, lr=lr, seed=seed
        )
    if as_json:
        typer.echo(json.dumps([r.summary() for r in results], sort_keys=True))
        return
    for r in results:
        scores = " ".join(f"{name}={value:.4f}" for name, value in r.scores.items())
        t = r.training
        typer.echo(
            f"{r.output}: {r.family} width {r.width} | params {r.params:,} (target "
            f"{r.target_params:,}) | {scores} | {t['epochs_run']} epochs (best {t['best_epoch']}) "
            f"| {r.seconds:.1f}s"
        )


def compare(
    model: Path = typer.Argument(..., help="Model file (as for extract)."),
    task: Path = TaskOpt,
    output: Path = typer.Option(
        ..., "-o", "--output", help="Report folder (new or empty; --force replaces it)."
    ),
    arch: str | None = typer.Option(None, "--arch", help="package.module:factory."),
    trust_model: bool = typer.Option(False, "--trust-model", help="Allow pickled modules."),
    seeds: int = typer.Option(3, min=1, help="Seeds per option (B's seed varies the search)."),
    method: str | None = typer.Option(
        None, help="Override search.method: auto | mask | mcts | attribution | greedy."
    ),
    budget: int | None = typer.Option(None, min=1, help="Override search.budget."),
    margin: float = typer.Option(
        0.0, min=0.0, help="Non-inferiority margin: B counts as >= X if B >= X - margin."
    ),
    family: str | None = FamilyOpt,
    baseline_epochs: int = typer.Option(DEFAULT_EPOCHS, min=1, help="Maximum epochs for A."),
    baseline_lr: float = typer.Option(DEFAULT_LR, min=0.0, help="Adam learning rate for A."),
    finetune_epochs: int | None = typer.Option(
        None, min=1, help="Override finetune.epochs for C (default: the spec's, else 5)."
    ),
    finetune_lr: float | None = typer.Option(
        None, min=0.0, help="Override finetune.lr for C (default: the spec's, else 1e-3)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty report folder."),
    keep: str | None = typer.Option(
        None,
        "--keep",
        help="Keep levels of a size curve, e.g. 0.8,0.9,0.95,0.99 (default: the spec's "
        "compare.keep, else its keep).",
    ),
    scope_sets: str | None = typer.Option(
        None,
        "--scope-sets",
        help="Also run B and C with pruning restricted to each named set of module globs: "
        "'early=layer.0*,layer.1*;late=layer.5*'.",
    ),
    validate: float | None = typer.Option(
        None,
        "--validate",
        help="Hold out this fraction of the search data as `validate`; adds a guarded B that "
        "must be faithful on both parts, and every B's search-vs-validate gap.",
    ),
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    debug: bool = DebugOpt,
) -> None:
    """Run A, B and C over seeds; report which case holds where.

    Writes report.md, report.json and a score-vs-params plot per split into the folder (with
    several keep levels: score-vs-size curves, crossovers, scope and guard comparisons)."""
    from legoc.experiment.compare import compare as run_compare
    from legoc.experiment.report import results_table, verdict_table
    from legoc.task.compare_spec import parse_keep_levels, parse_scope_sets

    with reporting(debug), progress_reporter(quiet) as progress:
        result = run_compare(
            model,
            task,
            output,
            arch=arch,
            trust_model=trust_model,
            seeds=seeds,
            method=method,
            budget=budget,
            margin=margin,
            family=family,
            baseline_epochs=baseline_epochs,
            baseline_lr=baseline_lr,
            finetune_epochs=finetune_epochs,
            finetune_lr=finetune_lr,
            force=force,
            progress=progress,
            keep_levels=parse_keep_levels(keep) if keep is not None else None,
            scope_sets=parse_scope_sets(scope_sets) if scope_sets is not None else None,
            validate=validate,
        )
    if as_json:
        typer.echo((Path(result.output) / "report.json").read_text())
        return
    typer.echo(results_table(result))
    typer.echo("")
    typer.echo(verdict_table(result))
    typer.echo(f"\nwrote {result.output}/report.md ({result.seconds:.0f}s)")
