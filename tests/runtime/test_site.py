"""`legoc catalog site`: the static site (index with filters, self-contained cards, composed
blocks' parts, one shared onnxruntime-web) and, in headless Chromium, every link resolving,
every picture loading and the run panel running a block."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from urllib.parse import urljoin

import numpy as np
import pytest

from legoc.errors import LegocError
from legoc.runtime import Block, Catalog, compose_parallel
from legoc.runtime.site import write_site
from legoc.runtime.web import ORT_DIR
from tests.runtime import browser
from tests.runtime.helpers import rows
from tests.runtime.test_web import ARTEFACTS, TOLERANCE, page_outputs

FAST = dict(runs=2, warmup=0)


# the site renders every block's web folder (an ORT-format conversion in a subprocess each):
# tens of seconds of CPU, so the whole module runs with the browser tests
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tiny, tmp_path_factory):
    """A catalogue of four blocks (mlp, mlp2, cnn and mlp + mlp2 in parallel) and its site."""
    root = tmp_path_factory.mktemp("site")
    catalog = Catalog(root / "catalog")
    catalog.add(tiny["mlp"]["block"])
    catalog.add(tiny["mlp2"]["block"])
    catalog.add(tiny["cnn"]["block"])
    pair = compose_parallel([Block.load(tiny["mlp"]["block"]), Block.load(tiny["mlp2"]["block"])])
    pair.save(root / "pair.onnx")
    catalog.add(root / "pair.onnx")
    report = write_site(catalog.root, root / "out", **FAST)
    return {"root": root, "catalog": catalog, "out": root / "out", "report": report}


def test_the_site_has_an_index_a_page_and_a_runner_per_block(site):
    out = site["out"]
    names = ["cnn", "mlp", "mlp2", "pair"]
    assert sorted(p.stem for p in (out / "blocks").iterdir()) == names
    assert sorted(p.name for p in (out / "run").iterdir()) == names
    assert site["report"].entries == 4
    # one onnxruntime-web for all: the run pages point at it and carry none
    assert (out / ORT_DIR / "ort-wasm-simd-threaded.wasm").is_file()
    for name in names:
        assert not (out / "run" / name / ORT_DIR).exists()
        manifest = json.loads((out / "run" / name / "manifest.json").read_text())
        assert manifest["ort_web"] == f"../../{ORT_DIR}/"
    index = (out / "index.html").read_text()
    assert index.count('class="entry"') == 4 and 'id="f-task"' in index


def test_cards_are_self_contained_and_show_cost_scores_and_units(site):
    page = (site["out"] / "blocks" / "cnn.html").read_text()
    sources = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    for needle in ("Kept units per layer", "Scores per split", "MACs per row", "latency b=1"):
        assert needle in page, needle
    assert "Provenance" in page and "faithfulness" in page


def test_a_composed_blocks_card_shows_and_links_its_parts(site):
    page = (site["out"] / "blocks" / "pair.html").read_text()
    assert "Parts (parallel)" in page
    parts = re.search(r"<h2>Parts \(parallel\)</h2><table>(.*?)</table>", page, re.S).group(1)
    assert parts.count("<tr>") == 3  # header + two parts
    assert 'href="mlp.html"' in parts and 'href="mlp2.html"' in parts
    assert "mlp/" in page and "mlp2/" in page  # kept units of both parts


def test_a_folder_that_is_not_a_site_is_not_overwritten(site, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(LegocError, match="not empty and not a legoc site"):
        write_site(site["catalog"].root, tmp_path / "mine", **FAST)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(LegocError, match="no entries"):
        Catalog(tmp_path / "empty").root.mkdir()
        write_site(tmp_path / "empty", tmp_path / "out", **FAST)


def test_the_cli_renders_and_rerenders_the_site(site, tmp_path):
    shutil.copytree(site["catalog"].root, tmp_path / "catalog")
    command = [sys.executable, "-m", "legoc.cli", "catalog", "site", str(tmp_path / "catalog")]
    for _ in range(2):  # the second run replaces the first site
        done = subprocess.run(
            [*command, "--runs", "1"], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        assert "4 block page(s)" in done.stdout
    assert (tmp_path / "catalog" / "site" / "index.html").is_file()


@pytest.mark.browser
def test_in_chromium_links_resolve_pictures_load_and_the_run_panel_works(site, tiny, tmp_path):
    x = rows((12, 6), seed=3)
    np.save(tmp_path / "x.npy", x)
    expected = Block.load(site["catalog"].root / "blocks" / "mlp.onnx")(x=x)["logits"]
    errors: list[str] = []
    with browser.serve(site["out"]) as url, browser.browser() as chromium:
        page = browser.open_page(chromium, url + "index.html", errors)
        pages, seen = [url + "index.html"], set()
        while pages:  # every page the site links to, breadth first
            current = pages.pop()
            if current in seen:
                continue
            seen.add(current)
            page.goto(current)
            page.wait_for_load_state("load")
            for frame in page.frames:  # every runner (page or panel) loads its block
                if frame.query_selector("#status") is not None:
                    assert browser.wait_state(frame, ("ready",)) == "ready", current
            broken = page.evaluate(
                "[...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
                ".map(i => i.alt)"
            )
            assert broken == [], (current, broken)
            targets = page.evaluate(
                "[...document.querySelectorAll('a[href], iframe[src]')]"
                ".map(e => e.getAttribute('href') || e.getAttribute('src'))"
            )
            for target in targets:
                absolute = urljoin(current, target).split("#")[0]
                response = page.request.get(absolute)
                assert response.status == 200, (current, target)
                if absolute.split("?")[0].endswith(".html"):
                    pages.append(absolute.split("?")[0])
        assert len(seen) == 1 + 4 + 4  # index, the block pages, the runners
        # the index filters by task and by size
        page.goto(url + "index.html")
        page.select_option("#f-task", "tiny-cnn")
        assert page.locator("tr.entry:visible").count() == 1
        page.select_option("#f-task", "")
        page.fill("#f-size", "0")
        assert page.locator("tr.entry:visible").count() == 0
        # the run panel on a block's page
        page.goto(url + "blocks/mlp.html")
        frame = page.frame_locator("#run-panel")
        runner = page.frame(url=re.compile(r".*/run/mlp/index\.html\?embed"))
        browser.wait_state(runner, ("ready",))
        frame.locator("#rows-file").set_input_files(str(tmp_path / "x.npy"))
        assert browser.wait_state(runner, ("done",)) == "done"
        assert np.abs(page_outputs(runner) - expected).max() <= TOLERANCE
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTEFACTS / "site-block.png"), full_page=True)
        page.goto(url + "index.html")
        page.screenshot(path=str(ARTEFACTS / "site-index.png"), full_page=True)
    assert errors == []
