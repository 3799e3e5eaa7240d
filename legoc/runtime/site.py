"""`legoc catalog site`: the catalogue as a static site to browse and try blocks in.

    OUT/index.html          every entry; filters by task, source model and size
    OUT/blocks/NAME.html    the entry's card (self-contained: the kept-units picture is embedded)
                            with a "run it here" panel
    OUT/run/NAME/           the entry's web deployment (legoc.runtime.web), the panel's page
    OUT/onnxruntime-web/    one copy of onnxruntime-web that every run page shares

Built in a scratch folder and moved into place when complete; serve OUT from any static server.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from legoc.errors import LegocError
from legoc.runtime.block import Block
from legoc.runtime.catalog import Catalog, Entry
from legoc.runtime.htmlcard import Cost, card_fragment, measure_cost, page
from legoc.runtime.web import ORT_DIR, _write_ort_web, deploy_web

MARKER = "site.json"  # marks a folder as a legoc site, which a rerun may replace


@dataclass
class SiteReport:
    out_dir: Path
    pages: list[str]
    entries: int
    bytes: int


@dataclass
class _Row:
    entry: Entry
    block: Block
    cost: Cost
    path: Path  # the catalogued file


def write_site(
    catalog_dir: str | Path,
    out_dir: str | Path | None = None,
    threads: int = 1,
    runs: int = 20,
    warmup: int = 3,
) -> SiteReport:
    """Render every entry (sha256-checked) into `out_dir` (default: CATALOG/site)."""
    catalog = Catalog(catalog_dir)
    entries = catalog.entries()
    if not entries:
        raise LegocError(
            f"catalogue {catalog.root}: no entries; add blocks with `legoc catalog add`"
        )
    out = Path(out_dir) if out_dir is not None else catalog.root / "site"
    _check_out(out)
    rows = []
    for name in sorted(entries):
        block = catalog.load(name)  # checks the sha256
        cost = measure_cost(block, threads, runs, warmup)
        rows.append(_Row(entries[name], block, cost, catalog.root / entries[name].file))
    links = {row.entry.sha256: f"{row.entry.name}.html" for row in rows}
    single = [r for r in rows if not r.block.meta("legoc.composition") and r.entry.task]
    for row in single:  # a part whose file was re-saved on `catalog add`: find it by task
        if sum(r.entry.task == row.entry.task for r in single) == 1:
            links.setdefault(f"task:{row.entry.task}", f"{row.entry.name}.html")
    parent = out.parent if str(out.parent) else Path(".")
    stage = Path(tempfile.mkdtemp(prefix=".legoc-site-", dir=parent))
    try:
        _write_ort_web(stage / ORT_DIR, None)
        (stage / "blocks").mkdir()
        (stage / "run").mkdir()
        pages = ["index.html"]
        for row in rows:
            name = row.entry.name
            deploy_web(
                row.path,
                stage / "run" / name,
                threads=threads,
                warmup=warmup,
                runs=runs,
                ort_href=f"../../{ORT_DIR}/",
                card_links={sha: f"../../blocks/{page}" for sha, page in links.items()},
                cost=row.cost,
            )
            (stage / "blocks" / f"{name}.html").write_text(
                _block_page(row, links), encoding="utf-8"
            )
            pages += [f"blocks/{name}.html", f"run/{name}/index.html"]
        (stage / "index.html").write_text(_index(rows), encoding="utf-8")
        (stage / MARKER).write_text(
            json.dumps({"legoc_site": 1, "entries": sorted(entries)}, indent=2) + "\n"
        )
        size = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file())
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return SiteReport(out, pages, len(rows), size)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise LegocError(f"output {out}: is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise LegocError(
            f"output {out}: folder is not empty and not a legoc site; pick an empty folder"
        )
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise LegocError(f"output {out}: folder {parent} does not exist; create it first")


def _faithfulness(block: Block) -> dict[str, float]:
    scores = block.meta("legoc.scores") or {}
    ordered = sorted(scores.items(), key=lambda item: item[0] != "search")  # search first
    return {
        split: float(s["faithfulness"])
        for split, s in ordered
        if isinstance(s, dict) and s.get("faithfulness") is not None
    }


def _block_page(row: _Row, links: dict[str, str]) -> str:
    e = html.escape
    entry, block = row.entry, row.block
    card = card_fragment(block, row.path, row.cost, links)
    body = [
        '<p><a href="../index.html">← all blocks</a></p>',
        f"<h1>{e(entry.name)}</h1>",
        f'<p class="muted">task {e(entry.task or "?")} · catalogue sha256 '
        f"<code>{e(entry.sha256)}</code> · added {e(entry.added)}</p>",
        '<section class="panel"><h2>Run it here</h2>',
        f'<iframe id="run-panel" src="../run/{e(entry.name)}/index.html?embed" '
        'style="width:100%;height:34em;border:0" title="run it here"></iframe>',
        f'<p><a href="../run/{e(entry.name)}/index.html">Open the runner on its own page</a></p>',
        "</section>",
        card,
    ]
    return page(f"{entry.name}: legoc block", "\n".join(body))


def _options(values: list[str], label: str) -> str:
    e = html.escape
    return "".join(
        [f'<option value="">all {label}</option>']
        + [f'<option value="{e(v)}">{e(v[:16])}</option>' for v in values]
    )


def _index(rows: list[_Row]) -> str:
    e = html.escape
    tasks = sorted({t for r in rows for t in (r.entry.tasks or [r.entry.task or "?"])})
    models = sorted({s for r in rows for s in r.entry.sources})
    lines = [
        "<h1>Block catalogue</h1>",
        f'<p class="muted">{len(rows)} block(s). Each page has the block\'s card and runs it in '
        "this browser (onnxruntime-web).</p>",
        '<p><label>task <select id="f-task">' + _options(tasks, "tasks") + "</select></label> "
        '<label>source model <select id="f-model">' + _options(models, "models") + "</select>"
        '</label> <label>params ≤ <input id="f-size" type="number" min="0" step="1000" '
        'placeholder="any"></label> <span id="f-count"></span></p>',
        '<table id="blocks"><tr><th>block</th><th>task</th><th>source model</th>'
        "<th>params</th><th>faithfulness per split</th><th>MACs/row</th>"
        "<th>latency b=1</th><th>file</th></tr>",
    ]
    for row in rows:
        entry = row.entry
        params = entry.params.get("block")
        source = entry.params.get("source")
        share = f" ({params / source:.1%})" if params and source else ""
        faith = ", ".join(f"{k} {v:.3f}" for k, v in _faithfulness(row.block).items())
        faith = faith or ("see its parts" if row.block.meta("legoc.composition") else "?")
        macs = f"{row.cost.macs:,}" if row.cost.macs is not None else "?"
        composed = " (composed)" if row.block.meta("legoc.composition") else ""
        lines.append(
            f'<tr class="entry" data-tasks="{e(json.dumps(entry.tasks))}" '
            f'data-models="{e(json.dumps(entry.sources))}" data-params="{params or 0}">'
            f'<td><a href="blocks/{e(entry.name)}.html">{e(entry.name)}</a>{composed}</td>'
            f"<td>{e(entry.task or '?')}</td>"
            f"<td><code>{e(', '.join(s[:12] for s in entry.sources) or '?')}</code></td>"
            f"<td>{params:,}{share}</td><td>{e(faith)}</td><td>{macs}</td>"
            f"<td>{row.cost.latency_ms.get('1', 0):.3f} ms</td><td>{entry.bytes:,} B</td></tr>"
        )
    lines.append("</table>")
    lines.append(
        "<script>\n"
        "const f = (id) => document.getElementById(id);\n"
        "function filter() {\n"
        "  const task = f('f-task').value, model = f('f-model').value;\n"
        "  const size = f('f-size').value === '' ? Infinity : Number(f('f-size').value);\n"
        "  let shown = 0;\n"
        "  for (const row of document.querySelectorAll('tr.entry')) {\n"
        "    const ok = (!task || JSON.parse(row.dataset.tasks).includes(task)) &&\n"
        "      (!model || JSON.parse(row.dataset.models).includes(model)) &&\n"
        "      Number(row.dataset.params) <= size;\n"
        "    row.hidden = !ok; shown += ok;\n"
        "  }\n"
        "  f('f-count').textContent = `${shown} shown`;\n"
        "}\n"
        "for (const id of ['f-task', 'f-model', 'f-size'])\n"
        "  f(id).addEventListener('input', filter);\n"
        "filter();\n"
        "</script>"
    )
    return page("legoc block catalogue", "\n".join(lines))
