"""A block's card as one self-contained HTML fragment: the card's sections, its cost (MACs,
latency) and the kept-units picture embedded as a data URI, so the page needs no other file.
Used by the web deployment's page and by every page of the catalogue site."""

from __future__ import annotations

import base64
import html
import tempfile
from dataclasses import dataclass
from pathlib import Path

from legoc.runtime.block import Block
from legoc.runtime.card import Section, card_sections, draw_units, units_per_layer

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:64em;margin:1.5em auto;padding:0 1em;"
    "color:#1a202c}table{border-collapse:collapse;margin-bottom:1.2em}"
    "td,th{border:1px solid #cbd5e0;padding:.2em .6em;text-align:left;vertical-align:top}"
    "th{background:#edf2f7}img{max-width:100%}.muted{color:#718096}"
    "section.panel{border:1px solid #cbd5e0;border-radius:6px;padding:.8em 1em;margin:1em 0}"
    "#status[data-state=error]{color:#c53030}#status[data-state=done]{color:#2f855a}"
    "code,pre{font-size:.9em}"
)


@dataclass(frozen=True)
class Cost:
    """What running the block costs: MACs per row and native onnxruntime latency."""

    macs: int | None
    latency_ms: dict[str, float]  # batch size -> median ms
    threads: int

    def rows(self) -> list[tuple[str, str]]:
        rows = []
        if self.macs is not None:
            rows.append(("MACs per row", f"{self.macs:,}"))
        for batch, ms in self.latency_ms.items():
            rows.append(
                (
                    f"latency b={batch} (onnxruntime CPU, {self.threads} thread)",
                    f"{ms:.3f} ms ({ms / int(batch):.4f} ms/row)",
                )
            )
        return rows


def measure_cost(block: Block, threads: int = 1, runs: int = 20, warmup: int = 3) -> Cost:
    """MACs from the graph and the median latency at batch 1 and 64 on seeded inputs."""
    from legoc.runtime.block import make_session
    from legoc.runtime.flops import macs_per_example
    from legoc.runtime.timing import BATCHES, batch_of, latency_ms

    try:
        macs: int | None = macs_per_example(block.model)
    except Exception:  # a graph shape inference cannot follow: no MAC count
        macs = None
    session = make_session(block.model.SerializeToString(), threads, block.label)
    latency = {
        str(n): latency_ms(session, batch_of(block.inputs, n), warmup, runs) for n in BATCHES
    }
    return Cost(macs, latency, threads)


def units_png(block: Block) -> bytes | None:
    """The kept-units-per-layer picture as PNG bytes (None when the block records no units)."""
    units = units_per_layer(block)
    if not units:
        return None
    with tempfile.TemporaryDirectory(prefix="legoc-card-") as tmp:
        path = Path(tmp) / "units.png"
        draw_units(units, path, block.task or "block")
        return path.read_bytes()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def validate_gap(block: Block) -> float | None:
    """Faithfulness on search minus on validate, when the block was scored on validate."""
    scores = block.meta("legoc.scores") or {}
    search, validate = scores.get("search") or {}, scores.get("validate") or {}
    if "faithfulness" in search and "faithfulness" in validate:
        return float(search["faithfulness"]) - float(validate["faithfulness"])
    return None


def card_fragment(
    block: Block,
    path: Path,
    cost: Cost | None = None,
    part_links: dict[str, str] | None = None,
) -> str:
    """The card's sections as HTML (no <html>/<body>); `part_links` maps a part's sha256 (or
    `task:NAME`) to the page of that part, so a composed block's card links its parts."""
    e = html.escape
    sections = card_sections(block, path)
    gap = validate_gap(block)
    if gap is not None:
        sections.append(Section("Search vs validate", None, [("faithfulness gap", f"{gap:+.4f}")]))
    if cost is not None:
        sections.append(Section("Cost", None, cost.rows()))
    composition = block.meta("legoc.composition")
    keys = [
        (p.get("sha256") or "", f"task:{p.get('task')}")
        for p in (composition.get("parts", []) if isinstance(composition, dict) else [])
    ]
    parts = []
    for section in sections:
        parts.append(f"<h2>{e(section.title)}</h2><table>")
        if section.header:
            parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in section.header) + "</tr>")
        for index, row in enumerate(section.rows):
            cells = [e(str(c)) for c in row]
            if section.title.startswith("Parts") and part_links and index < len(keys):
                sha, task = keys[index]
                target = part_links.get(sha) or part_links.get(task)
                if target:
                    cells[0] = f'<a href="{e(target)}">{cells[0]}</a>'
            parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
    units = units_per_layer(block)
    if units:
        png = units_png(block)
        parts.append("<h2>Kept units per layer</h2>")
        parts.append(f'<img class="units" src="{data_uri(png)}" alt="kept units per layer">')
        parts.append("<table><tr><th>layer</th><th>kept</th><th>total</th><th>share</th></tr>")
        for layer, kept, total in units:
            parts.append(
                f"<tr><td>{e(layer)}</td><td>{kept}</td><td>{total}</td>"
                f"<td>{kept / total:.0%}</td></tr>"
            )
        parts.append("</table>")
    return "\n".join(parts)


def page(title: str, body: str, head: str = "") -> str:
    """A whole HTML page around `body`."""
    e = html.escape
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<title>{e(title)}</title><link rel="icon" href="data:,">'
        f"<style>{STYLE}</style>{head}</head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )
