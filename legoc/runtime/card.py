"""`legoc card`: a Markdown or HTML page describing a block — provenance, interface, sizes,
scores — with a picture of the kept units per layer (a PNG written beside the card)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from legoc.errors import LegocError
from legoc.runtime.block import Block, malformed_metadata
from legoc.runtime.files import atomic_file, check_output_file, sha256_file

FORMATS = ("md", "html")


@dataclass
class CardFiles:
    card: Path
    image: Path | None


@dataclass
class Section:
    title: str
    header: tuple[str, ...] | None  # None: a key/value table
    rows: list[tuple[str, ...]]


def write_card(block_path: str | Path, out: str | Path | None = None, fmt: str = "md") -> CardFiles:
    """Write the card (and `STEM.units.png` beside it when the block records kept units)."""
    if fmt not in FORMATS:
        raise LegocError(f"--format {fmt!r}: use one of {list(FORMATS)}")
    block_path = Path(block_path)
    out = Path(out) if out is not None else block_path.with_suffix(f".{fmt}")
    check_output_file(out, {"the block": block_path})
    block = Block.load(block_path)
    block.check_loads()
    try:
        units = units_per_layer(block)
        sections = card_sections(block, block_path)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise malformed_metadata(block, exc) from None
    image = out.with_name(f"{out.stem}.units.png") if units else None
    if image is not None:
        check_output_file(image, {"the block": block_path})
    title = f"Building block: {block.task or block_path.stem}"
    if fmt == "md":
        text = _markdown(title, sections, image, units)
    else:
        text = _html(title, sections, image, units)
    with atomic_file(out) as tmp_card:
        if image is not None:
            with atomic_file(image) as tmp_image:
                draw_units(units, tmp_image, block.task or block_path.stem)
        tmp_card.write_text(text, encoding="utf-8")
    return CardFiles(out, image)


def units_per_layer(block: Block) -> list[tuple[str, int, int]]:
    """(layer, kept, total) from `legoc.rationale`, and from every part of a composed block."""
    rows = []
    for prefix, key in _rationale_keys(block):
        rationale = block.meta_dict(key)
        total = rationale.get("total") or {}
        kept = rationale.get("kept") or {}
        for layer in total:
            rows.append((f"{prefix}{layer}", len(kept.get(layer, [])), int(total[layer])))
    return rows


def _gap_rows(block: Block) -> list[tuple[str, str]]:
    """The search-vs-validate faithfulness gap (search.validate, or a compare run's B)."""
    held = block.meta_dict("legoc.validate") or block.meta_dict("legoc.compare")
    if not isinstance(held.get("overfit_gap"), (int, float)):
        return []
    return [
        (
            "over-fitting gap",
            f"{held['overfit_gap']:+.4f} (faithfulness {held['faithfulness_search']:.4f} on the "
            f"search part, {held['faithfulness_validate']:.4f} on the held-out validate part)",
        )
    ]


def _rationale_keys(block: Block) -> list[tuple[str, str]]:
    keys = []
    for key in sorted(block.metadata):
        if key == "legoc.rationale":
            keys.append(("", key))
        elif key.startswith("parts.") and key.endswith(".legoc.rationale"):
            part = key[len("parts.") : -len(".legoc.rationale")]
            keys.append((f"{part}/", key))
    return keys


def _param_rows(block: Block, params: dict) -> list[tuple[str, str]]:
    """params (the rationale's own count; a composition's is the sum of its parts') and the
    stored initializer count, labelled as padded when alignment zeros make it larger."""
    own, stored = block.rationale_params(), block.param_count()
    if params.get("source") and params.get("block") is not None:
        share = params["block"] / params["source"]
        rows = [("params source → block", f"{params['source']:,} → {own:,} ({share:.1%})")]
    elif block.meta("legoc.composition") is not None:
        rows = [("params", f"{own:,} (sum of the parts' params)")]
    else:
        rows = [("params", f"{own:,}")]
    if stored != own:
        rows.append(("stored", f"{stored:,} initializer elements, padded with alignment zeros"))
    else:
        rows.append(("stored", f"{stored:,} initializer elements"))
    return rows


def card_sections(block: Block, path: Path) -> list[Section]:
    meta = block.meta
    rationale = block.meta_dict("legoc.rationale")
    params = rationale.get("params") or {}
    search = block.meta_dict("legoc.search")
    versions = block.meta_dict("legoc.versions")
    size = path.stat().st_size
    provenance = [
        ("task", block.task or "unknown (no legoc metadata)"),
        ("source model sha256", meta("legoc.source_sha256", "unknown")),
        ("task spec sha256", meta("legoc.spec_sha256", "unknown")),
        ("block file sha256", sha256_file(path)),
        ("metric", meta("legoc.metric", "unknown")),
        ("written by", f"legoc {meta('legoc.version', 'unknown')}"),
    ]
    if search:
        provenance.append(
            (
                "search",
                f"{search.get('method')}, {search.get('evaluations')} evaluations, "
                f"keep {search.get('keep')}, seed {search.get('seed')}",
            )
        )
    if versions:
        provenance.append(("versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))))
    sizes = [("file size", f"{size:,} bytes"), *_param_rows(block, params)]
    layout = block.meta("legoc.layout")
    if isinstance(layout, dict) and layout.get("channels_added"):
        sizes.append(
            (
                "channel alignment",
                f"conv channels padded to multiples of {layout.get('align_channels')} with "
                f"{layout['channels_added']} zero channels (exact; for onnxruntime's fast kernels)",
            )
        )
    if "faithfulness" in rationale:
        sizes.append(("faithfulness on search", f"{rationale['faithfulness']:.4f}"))
    sizes += _gap_rows(block)
    interface = [("input", t.name, t.describe()) for t in block.inputs] + [
        ("output", t.name, t.describe()) for t in block.outputs
    ]
    sections = [
        Section("Provenance", None, provenance),
        Section("Interface", ("", "name", "type"), interface),
        Section("Size", None, sizes),
    ]
    scores = block.meta_dict("legoc.scores")
    if scores:
        metric = meta("legoc.metric", "metric")
        rows = [
            (
                split,
                _num(s.get("metric_full")),
                _num(s.get("metric_block")),
                _num(s.get("faithfulness")),
            )
            for split, s in sorted(scores.items(), key=lambda item: item[0] != "search")
        ]
        sections.append(
            Section(
                "Scores per split",
                ("split", f"{metric} (full model)", f"{metric} (block)", "faithfulness"),
                rows,
            )
        )
    composition = meta("legoc.composition")
    if isinstance(composition, dict):
        kind = composition.get("kind", "?") + (
            " (concatenated)" if composition.get("concat") else ""
        )
        rows = [
            (
                p["name"],
                p.get("task") or "?",
                (p.get("sha256") or "?")[:16],
                ", ".join(p["outputs"]),
            )
            for p in composition.get("parts", [])
        ]
        sections.append(Section(f"Parts ({kind})", ("part", "task", "sha256", "outputs"), rows))
    return sections


def _num(value) -> str:
    return "?" if value is None else f"{value:.4f}"


def draw_units(units: list[tuple[str, int, int]], path: Path, task: str) -> None:
    """Horizontal bars: total units (light) with the kept ones (dark) over them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state
    from matplotlib.figure import Figure

    labels = [u[0] for u in units]
    kept = [u[1] for u in units]
    total = [u[2] for u in units]
    figure = Figure(figsize=(7, 0.45 * len(units) + 1.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = list(range(len(units)))[::-1]
    axes.barh(positions, total, color="#d9d9d9", label="total")
    axes.barh(positions, kept, color="#2b6cb0", label="kept")
    for y, k, t in zip(positions, kept, total):
        axes.text(t, y, f" {k}/{t}", va="center", fontsize=8)
    axes.set_yticks(positions, labels)
    axes.set_xlabel("units")
    axes.set_xlim(0, max(total) * 1.18 if total else 1)
    axes.set_title(f"Kept units per layer: {task}", fontsize=9)
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")


def _markdown(title, sections, image, units) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        header = section.header or ("", "")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row in section.rows:
            lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
        lines.append("")
    if units:
        lines += ["## Kept units per layer", ""]
        lines += [f"![kept units per layer]({image.name})", ""]
        lines += ["| layer | kept | total | share |", "|---|---|---|---|"]
        for layer, kept, total in units:
            lines.append(f"| {_md_cell(layer)} | {kept} | {total} | {kept / total:.0%} |")
        lines.append("")
    return "\n".join(lines)


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _html(title, sections, image, units) -> str:
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
        "code{font-size:.9em}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{e(section.title)}</h2><table>")
        if section.header:
            parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in section.header) + "</tr>")
        for row in section.rows:
            parts.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    if units:
        parts.append("<h2>Kept units per layer</h2>")
        parts.append(f'<img src="{e(image.name)}" alt="kept units per layer">')
        parts.append("<table><tr><th>layer</th><th>kept</th><th>total</th><th>share</th></tr>")
        for layer, kept, total in units:
            parts.append(
                f"<tr><td>{e(layer)}</td><td>{kept}</td><td>{total}</td>"
                f"<td>{kept / total:.0%}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
