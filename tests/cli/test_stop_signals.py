"""A long `legoc compare` stops on SIGTERM and Ctrl-C even when the first exception is lost.

Python raises a signal's exception wherever the main thread is; inside a finalizer (`__del__`,
a generator closed by the garbage collector) it is printed as "Exception ignored" and dropped.
The CLI used to ignore SIGTERM from then on, so such a run went on to the end (issue 18). The
child below makes that landing certain: during C's retraining one object's `__del__` spins in
Python until the signal comes. Exit codes per DESIGN §3.4; the report folder is written whole
or not at all, and the inputs stay as they were.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import write_task

ROOT = Path(__file__).resolve().parents[2]
STOP_WITHIN = 30.0  # seconds from the signal to the exit: one training step and the cleanup,
# with room for a loaded machine (a step of the tiny model takes milliseconds)

# Every optimizer step drops an object; the first one dropped after MARKER's folder exists
# writes MARKER and spins in its `__del__` (Python bytecode, so the handler runs there) until
# a signal's exception ends it, or 60 s. Ctrl-C's handler is restored: a suite started with `&`
# inherits SIGINT ignored.
CHILD = """
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)
import torch
MARKER = Path(sys.argv.pop(1))

class Finalizer:
    spun = False

    def __del__(self):
        if Finalizer.spun:
            return
        Finalizer.spun = True
        MARKER.touch()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pass

step = torch.optim.Adam.step

def step_dropping_a_finalizer(self, *args, **kwargs):
    Finalizer()
    return step(self, *args, **kwargs)

torch.optim.Adam.step = step_dropping_a_finalizer
from legoc.cli.main import main
main()
"""


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    ("signum", "code", "line"),
    [
        (signal.SIGTERM, 143, "stopped by SIGTERM: nothing was written"),
        (signal.SIGINT, 130, "interrupted: nothing was written"),
    ],
)
def test_compare_stops_when_the_signal_lands_in_a_finalizer(tmp_path, signum, code, line):
    task = write_task(tmp_path / "task", "mlp", n=256)
    inputs = digests(task["folder"])
    work = tmp_path / "work"
    work.mkdir()
    out, marker = work / "report", tmp_path / "in-finalizer"
    args = ["compare", task["model"], "--task", task["spec"], "--arch", task["arch"]]
    args += ["--seeds", "1", "--finetune-epochs", "3000", "--baseline-epochs", "3000"]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(marker), *map(str, args), "-o", str(out)],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert marker.exists(), f"C's retraining never started: {child.poll()}"
        sent = time.monotonic()
        child.send_signal(signum)
        try:
            _, stderr = child.communicate(timeout=STOP_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_WITHIN:.0f} s after the signal")
        took = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == code, stderr
    assert took < STOP_WITHIN
    assert stderr.strip().splitlines()[-1] == line, stderr
    assert os.listdir(work) == []  # no report, no staging folder
    assert digests(task["folder"]) == inputs
