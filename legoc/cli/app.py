"""The `legoc` command: thin over `legoc.api`; parses, calls one function, prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

import legoc
from legoc import api
from legoc.cli.common import err, progress_reporter, reporting
from legoc.cli.compare import register_compare_commands
from legoc.cli.runtime import register_runtime_commands
from legoc.export.report import prepare_report_dir, write_report
from legoc.passes.rewrite.align_channels import DEFAULT_MULTIPLE
from legoc.task.spec import spec_json_schema

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: wraps sentences, never cuts them off with "…"
    help="legoc: extract the smallest faithful subgraph of a model as an ONNX block.",
)

ModelArg = typer.Argument(
    ...,
    help="Model file: a state dict (with --arch), a Hugging Face model folder "
    "(config.json + safetensors) or, with --trust-model, a pickled module or ExportedProgram.",
)
HFClassOpt = typer.Option(
    None,
    "--hf-class",
    help="The transformers class to load a Hugging Face folder as (e.g. "
    "AutoModelForSequenceClassification); default: the config's architectures.",
)
ArchOpt = typer.Option(
    None,
    "--arch",
    help="package.module:factory (or file.py:factory) returning the nn.Module for a state dict.",
)
TrustOpt = typer.Option(
    False,
    "--trust-model",
    help="Allow pickled modules and ExportedPrograms (loading them can run code from the file).",
)
DebugOpt = typer.Option(False, "--debug", help="Show tracebacks and debug logs.")
QuietOpt = typer.Option(
    False, "--quiet", "-q", help="No progress bars or status lines (errors and warnings only)."
)


def _print_version(value: bool) -> None:
    if value:
        found = api.versions()
        typer.echo(
            f"legoc {legoc.__version__} (torch {found['torch']}, onnx {found['onnx']}, "
            f"onnxruntime {found['onnxruntime']}, python {found['python']})"
        )
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="Print legoc's version and those of torch, onnx and onnxruntime, then exit.",
    ),
) -> None:
    """legoc: extract the smallest faithful subgraph of a model as an ONNX block."""


@app.command()
def schema() -> None:
    """Print the task spec's JSON Schema.

    Editors can check specs against it as they are typed; the reference is docs/task-spec.md."""
    typer.echo(json.dumps(spec_json_schema(), indent=2, sort_keys=True))


@app.command()
def extract(
    model: Path = ModelArg,
    task: Path = typer.Option(..., "--task", help="Task spec (YAML, schema version 1)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the ONNX block."),
    arch: str | None = ArchOpt,
    trust_model: bool = TrustOpt,
    hf_class: str | None = HFClassOpt,
    method: str | None = typer.Option(
        None, help="Override search.method: auto | mask | mcts | attribution | greedy."
    ),
    budget: int | None = typer.Option(
        None,
        min=1,
        help="Override search.budget: the search's work in evaluations (a pass over the search "
        "data), gradient steps included at their cost in passes.",
    ),
    seed: int | None = typer.Option(None, help="Override search.seed."),
    passes: str | None = typer.Option(
        None,
        "--passes",
        help="Search passes to run instead of the method's pipeline (auto,repair,minimize,"
        "round-widths,minimize,repair), e.g. 'magnitude,repair,minimize' or "
        "'greedy,round-widths{multiple=8}'; the block and layout pipelines follow them.",
    ),
    print_ir_after: str | None = typer.Option(
        None,
        "--print-ir-after",
        metavar="PASS",
        help="Print the IR text (on stderr) after every run of this pass, e.g. minimize, "
        "slice-units, align-channels.",
    ),
    time_limit: float | None = typer.Option(
        None,
        "--time-limit",
        help="Stop the search after this many seconds with the best faithful block found so far "
        "(exit 1 if it has removed nothing yet); the block is then written. Results then depend "
        "on the machine's speed.",
    ),
    model_output: str | None = typer.Option(
        None,
        "--model-output",
        help="Which output is the task's when the model returns a tuple/dict/HF output object: "
        "a key or a position (default: 'logits' if present, else the first).",
    ),
    objective: str = typer.Option(
        "params",
        "--objective",
        help="What the search minimises: params | macs (multiply-accumulates per input row; "
        "what latency follows; with --align-channels, conv widths are then dropped to the "
        "multiple below where the block stays faithful).",
    ),
    finetune: bool | None = typer.Option(
        None,
        "--finetune/--no-finetune",
        help="Retrain the block's weights on search data (option C); default: when the spec "
        "has a finetune section.",
    ),
    align_channels: int = typer.Option(
        DEFAULT_MULTIPLE,
        "--align-channels",
        help="Pad conv channels with exact zero channels to this multiple, so onnxruntime uses "
        "its blocked conv kernels (16 = AVX-512; 8 is enough on AVX2); 0 writes them as sliced.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    report: Path | None = typer.Option(
        None, "--report", help="Folder for the search trace (trace.json) and pareto.png."
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue an interrupted run from its checkpoint (OUTPUT.legoc-ckpt): same block.",
    ),
    quiet: bool = QuietOpt,
    debug: bool = DebugOpt,
) -> None:
    """Find the task's rationale; write it as a standalone ONNX block.

    Ctrl-C stops the run cleanly: nothing is written but a checkpoint beside the output, which
    --resume continues from."""
    if report is not None:
        with reporting(debug):
            prepare_report_dir(report)
    with reporting(debug), progress_reporter(quiet) as progress:
        after = None if print_ir_after is None else api.ir_printer(print_ir_after, _print_ir)
        result = api.extract(
            model,
            task,
            output,
            arch=arch,
            trust_model=trust_model,
            method=method,
            budget=budget,
            seed=seed,
            progress=progress,
            model_output=model_output,
            objective=objective,
            finetune=finetune,
            resume=resume,
            align_channels=align_channels,
            time_limit=time_limit,
            passes=passes,
            after=after,
            hf_class=hf_class,
        )
    for warning in result.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    summary = result.summary()
    if report is not None:
        with reporting(debug):
            write_report(report, summary, result.trace, result.keep)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
        return
    kept = " ".join(f"{name}={k}" for name, k in summary["units_kept"].items())
    evals = " ".join(f"{name}={s['faithfulness']:.3f}" for name, s in summary["scores"].items())
    retrained = ""
    if result.training is not None:
        t = result.training
        retrained = (
            f" | retrained {t['epochs_run']} epochs (best {t['best_epoch']}), "
            f"val {t['val_metric_before']:.3f} -> {t['val_metric_best']:.3f}"
        )
    typer.echo(summary_line(result, kept, evals, retrained))


def _print_ir(text: str) -> None:
    err.print(text, markup=False, highlight=False, soft_wrap=True, end="")


def summary_line(result: api.ExtractResult, kept: str, evals: str, retrained: str) -> str:
    """The one line `extract` prints: params as source -> block (stored, if alignment padded
    zeros in), faithfulness per split, the budget used and what stopped the search, whether
    the block is proven 1-minimal, and how many units in scope the analysis froze."""
    share = result.params_block / result.params_source
    stored = ""
    if result.params_stored != result.params_block:
        stored = f"; stored {result.params_stored:,} with alignment zeros"
    spent = result.budget
    stopped = {
        "budget": " (stopped by the budget)",
        "time-limit": f" (stopped by the time limit, {spent.get('time_limit') or 0:g} s)",
    }.get(spent.get("stopped_by"), "")
    minimal = "proven 1-minimal" if result.one_minimal else "not proven 1-minimal"
    held = result.validate
    if held:  # search.validate: the over-fitting gap
        evals += (
            f" (search part {held['faithfulness_search']:.3f}, validate "
            f"{held['faithfulness_validate']:.3f}, gap {held['overfit_gap']:+.3f})"
        )
    frozen = result.frozen or {}
    if frozen.get("units"):
        minimal += f" | {frozen['units']}/{frozen['in_scope']} units frozen (see inspect)"
    return (
        f"{result.output}: kept {kept} | params {result.params_source:,} -> "
        f"{result.params_block:,} ({share:.1%}{stored}) | faithfulness {evals} | "
        f"{result.evaluations} evaluations, budget {spent['used']:.0f}/{spent['limit']}{stopped}"
        f" | {minimal}{retrained} | {result.seconds:.1f}s"
    )


@app.command()
def inspect(
    model: Path = ModelArg,
    arch: str | None = ArchOpt,
    trust_model: bool = TrustOpt,
    task: Path | None = typer.Option(None, "--task", help="Also score the full model per split."),
    input_shape: list[str] = typer.Option(
        [], "--input-shape", help="NAME=D1,D2,... per input, without the batch."
    ),
    hf_class: str | None = HFClassOpt,
    debug: bool = DebugOpt,
) -> None:
    """Print the IR: nodes, shapes, prunable units, groups, params.

    Every node with its shape, weights by shape, each prunable module with its units,
    couplings and frozen reasons, and the params (buffers counted apart); with --task, the
    full model's score on each split."""
    with reporting(debug):
        shapes = api.parse_input_shapes(input_shape)
        text, scores = api.inspect_model(
            model,
            arch=arch,
            trust_model=trust_model,
            task=task,
            input_shapes=shapes,
            hf_class=hf_class,
        )
    typer.echo(text, nl=False)
    if scores:
        typer.echo("scores (full model):")
        for name, value in scores.items():
            typer.echo(f"  {name}: {value:.6g}")


register_runtime_commands(app)
register_compare_commands(app)


def main() -> None:
    app(prog_name="legoc")


if __name__ == "__main__":
    sys.exit(main())
