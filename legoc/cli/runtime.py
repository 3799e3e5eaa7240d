"""Commands that use blocks without searching: run, compose, deploy, catalog, card.

Thin over `legoc.runtime`: parse, call one function, print."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from legoc.cli.common import progress_bar, reporting, stage_progress
from legoc.errors import LegocError

DebugOpt = typer.Option(False, "--debug", help="Show tracebacks and debug logs.")
JsonOpt = typer.Option(False, "--json", help="Print the result as JSON.")
BlockArg = typer.Argument(..., help="An ONNX block (legoc extract / legoc compose).")

compose_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Compose blocks into one block: sequential or parallel.",
)
catalog_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="A local folder of blocks: add, list, show, search, verify, site.",
)


def register_runtime_commands(app: typer.Typer) -> None:
    """Add the block-side commands to the `legoc` app (kept apart from the compiler's)."""
    app.command("run")(run)
    app.add_typer(compose_app, name="compose")
    app.command("deploy")(deploy)
    app.add_typer(catalog_app, name="catalog")
    app.command("card")(card)


# ----------------------------------------------------------------------------- run


def run(
    block: Path = BlockArg,
    input: Path = typer.Argument(
        ..., help="Inputs: .npz (arrays named as the block's inputs), .npy, or a torch .pt file."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Write the outputs to this .npz instead of a summary."
    ),
    batch_size: int = typer.Option(256, min=1, help="Rows per onnxruntime call."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Run a block on an input file; print a summary or write .npz."""
    from legoc.runtime.run import run_file, summarize

    with reporting(debug):
        outputs, arrays = run_file(block, input, output, batch_size)
    summary = {name: summarize(value, arrays.get("y")) for name, value in outputs.items()}
    if as_json:
        typer.echo(json.dumps({"output": str(output) if output else None, "outputs": summary}))
        return
    if output is not None:
        typer.echo(f"wrote {output}: " + ", ".join(f"{k} {v['type']}" for k, v in summary.items()))
        return
    for name, info in summary.items():
        line = f"{name}: {info['type']}"
        if info["min"] is not None:
            line += f" min {info['min']:.4g} mean {info['mean']:.4g} max {info['max']:.4g}"
        if "accuracy" in info:
            line += f" | accuracy vs y {info['accuracy']:.4f}"
        typer.echo(line)


# ----------------------------------------------------------------------------- compose

BlocksArg = typer.Argument(..., help="Two or more blocks, in order.")
OutOpt = typer.Option(..., "-o", "--output", help="Where to write the composed block.")
NameOpt = typer.Option(
    [], "--name", help="Part names, one per block, in order (default: the file stems)."
)
CheckOpt = typer.Option(
    None,
    "--check-data",
    help="Inputs for the numeric check (.npz/.pt); default: 16 seeded random rows.",
)


def _compose(kind: str, blocks, output, check_data, names, debug, **options) -> None:
    from legoc.runtime.compose import compose_files

    with reporting(debug):
        composition, diff = compose_files(kind, blocks, output, check_data, names, **options)
    result = composition.block
    names = [name for name, _ in composition.parts]
    joined = " -> ".join(names) if kind == "sequential" else " + ".join(names)
    ins = ", ".join(f"{t.name} {t.describe()}" for t in result.inputs)
    outs = ", ".join(f"{t.name} {t.describe()}" for t in result.outputs)
    typer.echo(
        f"{output}: {kind} {joined} | inputs {ins} | outputs {outs} | "
        f"params {result.rationale_params():,} (sum of the parts' params; stored "
        f"{result.param_count():,}) | max |composed - parts| {diff:.3g}"
    )


@compose_app.command("sequential")
def compose_sequential_command(
    blocks: list[Path] = BlocksArg,
    output: Path = OutOpt,
    mapping: list[str] = typer.Option(
        [],
        "--map",
        help="OUTPUT=INPUT: feed an output into a differently named input of the next block.",
    ),
    names: list[str] = NameOpt,
    check_data: Path | None = CheckOpt,
    debug: bool = DebugOpt,
) -> None:
    """Chain blocks: each one's outputs feed the next one's inputs.

    Outputs and inputs match by name, or as --map OUTPUT=INPUT says."""
    with reporting(debug):
        pairs = {}
        for item in mapping:
            out, sep, inp = item.partition("=")
            if not sep or not out or not inp:
                raise LegocError(f"--map {item!r}: expected OUTPUT=INPUT, e.g. --map logits=x")
            pairs[out] = inp
    _compose("sequential", blocks, output, check_data, names, debug, mapping=pairs)


@compose_app.command("parallel")
def compose_parallel_command(
    blocks: list[Path] = BlocksArg,
    output: Path = OutOpt,
    concat: bool = typer.Option(
        False, "--concat", help="One output, concatenated on the last axis (else PART.OUTPUT each)."
    ),
    names: list[str] = NameOpt,
    check_data: Path | None = CheckOpt,
    debug: bool = DebugOpt,
) -> None:
    """Run blocks side by side on the same inputs.

    Their outputs stay apart, or are concatenated with --concat."""
    _compose("parallel", blocks, output, check_data, names, debug, concat=concat)


# ----------------------------------------------------------------------------- deploy


def deploy(
    block: Path = BlockArg,
    target: str = typer.Option(..., "--target", help="ort | ort-int8 | ort-mobile | web"),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the deployed files."),
    task: Path | None = typer.Option(
        None, "--task", help="The block's task spec: calibration data and scores per split."
    ),
    quant: str = typer.Option(
        "auto",
        "--quant",
        help="int8 mode: auto (static with --task, else dynamic) | static | dynamic",
    ),
    threads: int = typer.Option(1, min=0, help="onnxruntime intra-op threads (0: its default)."),
    runs: int = typer.Option(30, min=1, help="Timed runs per latency (median)."),
    warmup: int = typer.Option(5, min=0, help="Warm-up runs before timing."),
    web_format: str = typer.Option(
        "auto", "--web-format", help="web: the block as ort (ORT format), onnx, or auto (ort)."
    ),
    ort_web: Path | None = typer.Option(
        None,
        "--ort-web",
        help="web: take onnxruntime-web from this npm-installed folder instead of legoc's copy.",
    ),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Quantize or convert a block; report size, latency and scores. --target web writes a
    folder that runs the block in the browser (onnxruntime-web)."""
    from legoc.runtime import deploy as deploy_block

    with reporting(debug), progress_bar() as bar:
        report = deploy_block(
            block,
            target,
            output,
            task=task,
            quant=quant,
            threads=threads,
            warmup=warmup,
            runs=runs,
            progress=stage_progress(bar),
            web_format=web_format,
            ort_web=ort_web,
        )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), sort_keys=True))
        return
    if target == "web":
        native = ", ".join(f"b={b} {ms:.3f} ms" for b, ms in report.native_latency_ms.items())
        typer.echo(
            f"{output}: {', '.join(report.files)} ({report.bytes / 1e6:.1f} MB; block as "
            f"{report.format}, onnxruntime-web {report.ort_web_version}) | native onnxruntime "
            f"{native}"
        )
        typer.echo(f"open it: python3 -m http.server -d {output} -b 127.0.0.1, then /index.html")
        for note in report.notes:
            typer.echo(f"note: {note}")
        return
    how = ""
    if report.quantization:
        q = report.quantization
        rows = (
            f", calibrated on {q['calibration_rows']} search rows"
            if "calibration_rows" in q
            else ""
        )
        how = f" ({q['mode']} int8{rows})"
    typer.echo(f"{output}: {', '.join(report.files)}{how} | {threads} thread(s), median of {runs}")
    typer.echo(report.table())
    for note in report.notes:
        typer.echo(f"note: {note}")


# ----------------------------------------------------------------------------- catalog

DirArg = typer.Argument(..., help="The catalogue folder (index.json + blocks/).")


def _entry_line(entry) -> str:
    params = entry.params.get("block")
    return (
        f"{entry.name}  task={entry.task or '?'}  params={params:,}  "
        f"sha256={entry.sha256[:12]}  source={(entry.source_sha256 or '?')[:12]}  "
        f"added={entry.added}"
    )


def _print_entries(entries, as_json: bool) -> None:
    from dataclasses import asdict

    if as_json:
        typer.echo(json.dumps([asdict(e) for e in entries], sort_keys=True))
        return
    for entry in entries:
        typer.echo(_entry_line(entry))


@catalog_app.command("add")
def catalog_add(
    folder: Path = DirArg,
    block: Path = BlockArg,
    name: str | None = typer.Option(None, "--name", help="Entry name (default: file stem)."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite an entry of that name."),
    debug: bool = DebugOpt,
) -> None:
    """Copy a block into the catalogue and index it (creates the folder)."""
    from legoc.runtime import Catalog

    with reporting(debug):
        entry = Catalog(folder).add(block, name=name, replace=replace)
    typer.echo(f"added {_entry_line(entry)}")


@catalog_app.command("list")
def catalog_list(folder: Path = DirArg, as_json: bool = JsonOpt, debug: bool = DebugOpt) -> None:
    """One line per entry."""
    from legoc.runtime import Catalog

    with reporting(debug):
        entries = list(Catalog(folder).entries().values())
    _print_entries(entries, as_json)


@catalog_app.command("show")
def catalog_show(
    folder: Path = DirArg,
    name: str = typer.Argument(..., help="Entry name."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Everything the index and the block's metadata say about one entry."""
    from dataclasses import asdict

    from legoc.runtime import Catalog

    with reporting(debug):
        catalog = Catalog(folder)
        entry = catalog.get(name)
        block = catalog.load(name)
    body = asdict(entry)
    body["metadata"] = {k: block.meta(k) for k in sorted(block.metadata)}
    body["interface"] = {
        "inputs": {t.name: t.describe() for t in block.inputs},
        "outputs": {t.name: t.describe() for t in block.outputs},
    }
    if as_json:
        typer.echo(json.dumps(body, sort_keys=True))
        return
    for key, value in body.items():
        if isinstance(value, dict) and key in ("metadata", "interface"):
            typer.echo(f"{key}:")
            for k, v in value.items():
                text = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
                typer.echo(f"  {k}: {text if len(text) <= 200 else text[:197] + '...'}")
        else:
            typer.echo(f"{key}: {value}")


@catalog_app.command("search")
def catalog_search(
    folder: Path = DirArg,
    task: str | None = typer.Option(
        None, "--task", help="Text in the task name, or a glob (case-insensitive)."
    ),
    source: str | None = typer.Option(None, "--source", help="Source model sha256 (prefix)."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Find entries by task and/or source model.

    Parts of composed blocks count too."""
    from legoc.runtime import Catalog

    with reporting(debug):
        if task is None and source is None:
            raise LegocError("catalog search: pass --task NAME and/or --source SHA256")
        entries = Catalog(folder).search(task=task, source=source)
    _print_entries(entries, as_json)
    if not entries and not as_json:
        typer.echo("no entries match")


@catalog_app.command("verify")
def catalog_verify(folder: Path = DirArg, debug: bool = DebugOpt) -> None:
    """Recompute each entry's sha256.

    Exits 2 naming every entry that does not match."""
    from legoc.runtime import Catalog

    with reporting(debug):
        entries = Catalog(folder).verify()
    typer.echo(f"{folder}: {len(entries)} entries verified (sha256)")


@catalog_app.command("site")
def catalog_site(
    folder: Path = DirArg,
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Folder for the site (default: CATALOG/site)."
    ),
    threads: int = typer.Option(1, min=0, help="onnxruntime threads for the latency column."),
    runs: int = typer.Option(20, min=1, help="Timed runs per latency (median)."),
    debug: bool = DebugOpt,
) -> None:
    """Render the catalogue as a static site with a page per block.

    The index filters by task, model and size; each block page is its self-contained card with
    a panel that runs the block in the browser (onnxruntime-web)."""
    from legoc.runtime.site import write_site

    with reporting(debug):
        report = write_site(folder, output, threads=threads, runs=runs)
    typer.echo(
        f"wrote {report.out_dir}: {report.entries} block page(s), {report.bytes / 1e6:.1f} MB; "
        f"open it: python3 -m http.server -d {report.out_dir} -b 127.0.0.1, then /index.html"
    )


# ----------------------------------------------------------------------------- card


def card(
    block: Path = BlockArg,
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Card file (default: the block's name with .md or .html)."
    ),
    fmt: str = typer.Option("md", "--format", help="md | html"),
    debug: bool = DebugOpt,
) -> None:
    """Write a block's card (Markdown or HTML).

    Provenance, interface, sizes (params and stored initializers), scores and the kept units
    per layer."""
    from legoc.runtime import write_card

    with reporting(debug):
        files = write_card(block, output, fmt)
    extra = f" and {files.image}" if files.image else ""
    typer.echo(f"wrote {files.card}{extra}")
