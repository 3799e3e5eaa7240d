"""Headless Chromium for the browser tests: a static server on 127.0.0.1 and a page driver.

Debian's `chromium` (/usr/bin/chromium) driven by playwright's Python package, launched with
the flags that keep it off the network; no browser is downloaded. Tests that use these are
marked `browser` and skip, saying why, where chromium or playwright is missing."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """The system chromium, or a skip naming what to install."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("browser test: no chromium on PATH (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("browser test: the playwright package is missing (pip install '.[test]')")
    return path


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {  # noqa: RUF012 - the handler class's own table, never mutated
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".json": "application/json",
    }

    def log_message(self, *args) -> None:  # the test output stays readable
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve `folder` on 127.0.0.1 (a free port) for the duration; yields the base URL."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def browser() -> Iterator[object]:
    """A headless chromium (playwright Browser), closed afterwards."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    with sync_playwright() as play:
        chromium = play.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(chromium, url: str, errors: list[str]):
    """A page at `url` that records console errors and failed requests into `errors`."""
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("requestfailed", lambda r: _failed(r, errors))
    page.on("response", lambda r: r.status >= 400 and errors.append(f"HTTP {r.status}: {r.url}"))
    page.goto(url)
    return page


def _failed(request, errors: list[str]) -> None:
    """A failed request, unless the page itself cancelled it by navigating away."""
    if "ERR_ABORTED" not in (request.failure or ""):
        errors.append(f"request failed: {request.url} ({request.failure})")


def wait_state(page, states: tuple[str, ...], timeout_ms: int = 120_000) -> str:
    """Wait until #status reaches one of `states` (or error); returns the state."""
    wanted = [*list(states), "error"]
    page.wait_for_function(
        f"() => {wanted!r}.includes(document.getElementById('status')?.dataset.state)",
        timeout=timeout_ms,
    )
    return page.eval_on_selector("#status", "e => e.dataset.state")
