"""`legoc deploy --target web`: a self-contained folder that runs a block in the browser.

The folder holds the block (ORT format, which onnxruntime-web loads, or .onnx), onnxruntime-web's
wasm build (vendored into legoc from the npm package at a pinned version and checked by sha256,
so deploying needs no network and the page works offline), an `index.html` with the block's
card and a panel that runs the block on rows the user gives, and `manifest.json`. Serve it from
any static server (`python3 -m http.server -d DIR -b 127.0.0.1`): browsers do not run wasm
modules from file:// pages.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import lzma
import os
import shutil
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import onnx

import legoc
from legoc.errors import LegocError
from legoc.runtime.block import Block, TensorInfo
from legoc.runtime.files import staging_folder
from legoc.runtime.htmlcard import Cost, card_fragment, measure_cost, page
from legoc.runtime.timing import RUNS, WARMUP

log = logging.getLogger(__name__)

ORT_WEB_VERSION = "1.30.0"
ORT_DIR = "onnxruntime-web"
# The files of onnxruntime-web's wasm-only build that a page needs, with their sha256 in the
# npm package (the .wasm is stored xz-compressed in legoc: 14.2 MB -> 2.2 MB).
ORT_FILES = {
    "ort.wasm.min.mjs": "219e6a1fc8a9938268d18efca3c91d310bd2f4a59bbd13744df5b2b7fc6cee3b",
    "ort-wasm-simd-threaded.mjs": (
        "e13f7f94fc51b4ca72b12faeb1ee95f4ace6dfbc8939bc718aabdc0a27c4299b"
    ),
    "ort-wasm-simd-threaded.wasm": (
        "3398c10d07d229bd91b364548e130e0e51a8e5704b88c7c083ebbeb78842dee2"
    ),
}
FORMATS = ("auto", "ort", "onnx")
SAMPLE_ROWS = 16
BATCH_SIZE = 64


@dataclass
class WebReport:
    target: str
    block: str
    out_dir: str
    model: str  # the block file in the folder
    format: str  # ort | onnx
    files: list[str]
    bytes: int  # the whole folder
    ort_web_version: str
    native_latency_ms: dict[str, float]
    threads: int
    samples: str | None
    notes: list[str] = field(default_factory=list)
    legoc_version: str = legoc.__version__

    def to_dict(self) -> dict:
        return asdict(self)


def deploy_web(
    block_path: str | Path,
    out_dir: str | Path,
    task: str | Path | None = None,
    fmt: str = "auto",
    ort_web: str | Path | None = None,
    threads: int = 1,
    warmup: int = WARMUP,
    runs: int = RUNS,
    sample_rows: int = SAMPLE_ROWS,
    ort_href: str | None = None,
    card_links: dict[str, str] | None = None,
    cost: Cost | None = None,
) -> WebReport:
    """Write the web folder; files move into `out_dir` only when all are written.

    `task`: search rows for the page's sample button (first `sample_rows`). `ort_web`: an
    onnxruntime-web folder to take the wasm files from instead of legoc's own (an npm-installed
    `node_modules/onnxruntime-web` or its `dist`). `ort_href`: where the page finds
    onnxruntime-web when the folder does not carry it (the catalogue site shares one copy);
    `card_links` maps a part's sha256 to its page; `cost` skips measuring it again."""
    if fmt not in FORMATS:
        raise LegocError(f"--web-format {fmt!r}: use one of {list(FORMATS)}")
    block_path = Path(block_path)
    block = Block.load(block_path, threads=threads)
    block.check_loads()
    out_dir = Path(out_dir)
    stem = block_path.stem
    notes: list[str] = []
    samples = _sample_rows(block, task, sample_rows) if task is not None else None
    with staging_folder(out_dir) as stage:
        model_file, used = _write_model(block, stem, stage, fmt, notes)
        if cost is None:
            cost = measure_cost(block, threads=threads, runs=runs, warmup=warmup)
        moved = [model_file.name]
        if ort_href is None:
            version = _write_ort_web(stage / ORT_DIR, ort_web)
            moved.append(ORT_DIR)
        else:
            version = ORT_WEB_VERSION if ort_web is None else _version_of(Path(ort_web))
        if samples is not None:
            np.savez(stage / "samples.npz", **samples)
            moved.append("samples.npz")
        manifest = _manifest(block, model_file.name, used, version, ort_href, samples, cost)
        manifest["latency"] = {"warmup": min(warmup, 5), "runs": min(runs, 30)}
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        card = card_fragment(block, block_path, cost, card_links)
        (stage / "index.html").write_text(_page(block, stem, manifest, card), encoding="utf-8")
        (stage / "legoc-web.js").write_bytes(_asset("legoc-web.js"))
        moved += ["manifest.json", "index.html", "legoc-web.js"]
        size = sum(_size(stage / name) for name in moved)
        report = WebReport(
            target="web",
            block=str(block_path),
            out_dir=str(out_dir),
            model=model_file.name,
            format=used,
            files=sorted(moved),
            bytes=size,
            ort_web_version=version,
            native_latency_ms=cost.latency_ms,
            threads=threads,
            samples="samples.npz" if samples is not None else None,
            notes=notes,
        )
        (stage / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        moved.append("report.json")
        for name in moved:
            target = out_dir / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)  # only legoc's own onnxruntime-web folder is a folder
            os.replace(stage / name, target)
    return report


def _write_model(
    block: Block, stem: str, stage: Path, fmt: str, notes: list[str]
) -> tuple[Path, str]:
    """The block as the page loads it: ORT format when asked or when conversion works."""
    fp32 = stage / f"{stem}.onnx"
    onnx.save(block.model, str(fp32))  # external data embedded: the copy stands alone
    if fmt == "onnx":
        return fp32, "onnx"
    from legoc.runtime.mobile import to_ort_format

    ort_dir = stage / ".ort"
    ort_dir.mkdir()
    try:
        ort_path, _config = to_ort_format(fp32, ort_dir)
    except LegocError as exc:
        if fmt == "ort":
            raise
        notes.append(f"ORT format conversion failed ({exc}); the page loads the .onnx block")
        return fp32, "onnx"
    final = stage / ort_path.name
    os.replace(ort_path, final)
    fp32.unlink()
    shutil.rmtree(ort_dir)
    return final, "ort"


def _asset(name: str) -> bytes:
    return (resources.files("legoc.runtime") / "webassets" / name).read_bytes()


def _write_ort_web(folder: Path, source: str | Path | None) -> str:
    """onnxruntime-web's files into `folder`; legoc's vendored copy is checked by sha256."""
    folder.mkdir()
    if source is not None:
        dist = _dist_of(Path(source))
        for name in ORT_FILES:
            shutil.copyfile(dist / name, folder / name)
        return _version_of(Path(source))
    for name, digest in ORT_FILES.items():
        if name.endswith(".wasm"):
            data = lzma.decompress(_asset(f"{ORT_DIR}/{name}.xz"))
        else:
            data = _asset(f"{ORT_DIR}/{name}")
        if hashlib.sha256(data).hexdigest() != digest:
            raise LegocError(
                f"legoc's copy of onnxruntime-web {name} does not match its sha256; reinstall "
                "legoc or pass --ort-web path/to/node_modules/onnxruntime-web"
            )
        (folder / name).write_bytes(data)
    (folder / "LICENSE").write_bytes(_asset(f"{ORT_DIR}/LICENSE"))
    return ORT_WEB_VERSION


def _dist_of(source: Path) -> Path:
    for dist in (source / "dist", source):
        if all((dist / name).is_file() for name in ORT_FILES):
            return dist
    raise LegocError(
        f"--ort-web {source}: no {', '.join(ORT_FILES)} there; give an npm-installed "
        "node_modules/onnxruntime-web folder (or its dist/)"
    )


def _version_of(source: Path) -> str:
    for package in (source / "package.json", source.parent / "package.json"):
        if package.is_file():
            try:
                return str(json.loads(package.read_text())["version"])
            except (ValueError, KeyError):
                break
    return "unknown"


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _sample_rows(block: Block, task: str | Path, rows: int) -> dict[str, np.ndarray]:
    from legoc.runtime.scores import load_split, read_task

    data = read_task(task)
    split = load_split("search", data.splits["search"], block.input_names, "data.search")
    arrays = block.feeds(split.inputs, f"data.search {data.splits['search']}")
    samples = {name: a[:rows] for name, a in arrays.items()}
    if split.y is not None:
        samples["y"] = np.asarray(split.y)[:rows]
    return samples


def _shape(info: TensorInfo) -> list:
    return [d if isinstance(d, int) else (d or "?") for d in (info.shape or ())]


def _manifest(block, model, fmt, version, ort_href, samples, cost) -> dict:
    return {
        "legoc_web": 1,
        "task": block.task,
        "model": model,
        "format": fmt,
        "ort_web": ort_href or f"{ORT_DIR}/",
        "ort_web_version": version,
        "inputs": [
            {"name": t.name, "dtype": str(t.dtype), "shape": _shape(t)} for t in block.inputs
        ],
        "outputs": [
            {"name": t.name, "dtype": str(t.dtype), "shape": _shape(t)} for t in block.outputs
        ],
        "batch_size": BATCH_SIZE,
        "samples": "samples.npz" if samples is not None else None,
        "image": image_input(block),
        "tokens": token_inputs(block),
        "labels": None,
        "native": {"latency_ms": cost.latency_ms, "threads": cost.threads, "macs": cost.macs},
    }


def image_input(block: Block) -> dict | None:
    """A single float input [batch, C, H, W] with C 1 or 3: the page offers a canvas."""
    if len(block.inputs) != 1:
        return None
    info = block.inputs[0]
    shape = info.shape or ()
    if info.dtype.kind != "f" or len(shape) != 4:
        return None
    channels, height, width = shape[1:]
    if channels not in (1, 3) or not isinstance(height, int) or not isinstance(width, int):
        return None
    return {"channels": channels, "height": height, "width": width}


def token_inputs(block: Block) -> dict | None:
    """`input_ids` [batch, T] (and `attention_mask`): the page takes token ids."""
    names = {t.name: t for t in block.inputs}
    ids = names.get("input_ids")
    if ids is None or ids.dtype.kind not in "iu" or len(ids.shape or ()) != 2:
        return None
    if set(names) - {"input_ids", "attention_mask"}:
        return None
    length = ids.shape[1] if isinstance(ids.shape[1], int) else None
    mask = "attention_mask" if "attention_mask" in names else None
    return {"ids": "input_ids", "mask": mask, "length": length, "pad_id": 0}


def _page(block: Block, stem: str, manifest: dict, card: str) -> str:
    e = html.escape
    title = f"{block.task or stem}: run it here"
    native = manifest["native"]["latency_ms"]
    native_text = ", ".join(
        f"b={b}: {ms:.3f} ms ({ms / int(b):.4f} ms/row)" for b, ms in native.items()
    )
    panels = [
        '<section class="panel" id="run">',
        f"<h1>{e(block.task or stem)}</h1>",
        f'<p id="status" data-state="loading">loading {e(manifest["model"])}…</p>',
        "<h2>Run it here</h2>",
        "<p><label>A file of rows (.npy, .npz or .json; several .npy files named by input): "
        '<input type="file" id="rows-file" multiple accept=".npy,.npz,.json"></label></p>',
    ]
    if manifest["samples"]:
        panels.append('<p><button id="run-samples">Run on the sample search rows</button></p>')
    if manifest["image"]:
        image = manifest["image"]
        panels += [
            f"<h3>A picture ({image['channels']}×{image['height']}×{image['width']}, "
            "pixels scaled to [0, 1])</h3>",
            "<p>Draw in the box (white on black) or drop a picture on it.</p>",
            '<canvas id="draw" width="256" height="256" '
            'style="border:1px solid #999;touch-action:none;width:256px"></canvas>',
            '<p><input type="file" id="picture" accept="image/*"> '
            '<button id="clear">Clear</button> '
            '<button id="run-picture">Run on the picture</button></p>',
        ]
    if manifest["tokens"]:
        tokens = manifest["tokens"]
        length = tokens["length"] or "any"
        panels += [
            f"<h3>Token ids (one row per line; padded with {tokens['pad_id']} to {length})</h3>",
            '<textarea id="token-ids" rows="3" cols="60">101 2054 102</textarea>',
            '<p><button id="run-tokens">Run on the token ids</button></p>',
        ]
    panels += [
        '<table id="outputs"></table><p class="muted" id="more"></p>',
        '<p><a id="download" download="outputs.json" hidden>Download the outputs (JSON)</a></p>',
        f'<p class="muted">Native onnxruntime (CPU, {manifest["native"]["threads"]} thread): '
        f"{e(native_text)}. In the browser: onnxruntime-web {e(manifest['ort_web_version'])} "
        f"(wasm, 1 thread), {e(manifest['format'])} format.</p>",
        "</section>",
    ]
    body = "\n".join(panels) + f'\n<div id="card">\n{card}\n</div>\n'
    body += (
        '<script type="application/json" id="legoc-manifest">'
        + json.dumps(manifest).replace("</", "<\\/")
        + "</script>\n"
        '<script>if (new URLSearchParams(location.search).has("embed"))'
        ' document.getElementById("card").hidden = true;</script>\n'
        '<script type="module" src="legoc-web.js"></script>'
    )
    return page(title, body)
