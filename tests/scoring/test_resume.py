"""Interruption and --resume (legoc.checkpoint): Ctrl-C during a search or an export leaves no
partial block, says where the search was, keeps a checkpoint, and a resumed run reaches the same
block byte for byte while paying only for the evaluations the first run did not make."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from legoc import api
from legoc.errors import Interrupted, LegocError
from legoc.scoring.journal import checkpoint_path
from tests.helpers import write_task

SPEC = {"keep": 0.9, "search": {"method": "greedy", "budget": 300, "seed": 0}}


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """The 64-unit MLP task: a few hundred evaluations per search, under a second."""
    return write_task(tmp_path_factory.mktemp("wide") / "task", "wide", n=300, spec=SPEC)


def extract(task, out: Path, method: str, **kwargs):
    return api.extract(task["model"], task["spec"], out, arch=task["arch"], method=method, **kwargs)


def stop_after(k: int, stage: str = "search"):
    """A progress callback that presses Ctrl-C once `stage` has done `k` steps (the search:
    used `k` of its budget, gradient steps included)."""

    def progress(name: str, done: int, total: int) -> None:
        if name == stage and done >= k:
            raise KeyboardInterrupt

    return progress


@pytest.mark.parametrize("method", ["greedy", "mcts", "auto", "mask"])
def test_an_interrupted_search_resumes_to_the_same_block(wide, tmp_path, method):
    whole = extract(wide, tmp_path / "whole.onnx", method)
    out = tmp_path / "out" / "block.onnx"
    out.parent.mkdir()
    half = int(whole.budget["used"]) // 2
    with pytest.raises(Interrupted) as info:
        extract(wide, out, method, progress=stop_after(half))
    checkpoint = checkpoint_path(out)
    k, used = stopped_at(info.value)
    assert str(info.value) == (
        f"interrupted after {k} evaluations ({used} of the budget of 300 used); nothing was "
        f"written; checkpoint saved to {checkpoint}; rerun the same command with --resume to "
        "continue"
    )
    assert 0 < k < whole.evaluations and half <= used < whole.budget["used"]
    assert sorted(os.listdir(out.parent)) == [checkpoint.name], "a partial block was left"
    resumed = extract(wide, out, method, resume=True)
    assert out.read_bytes() == (tmp_path / "whole.onnx").read_bytes()
    assert resumed.evaluations == whole.evaluations
    assert resumed.replayed == k  # answered from the checkpoint, without running the model
    assert resumed.paid == whole.evaluations - k
    assert sorted(os.listdir(out.parent)) == ["block.onnx"], "the checkpoint outlived the run"


def stopped_at(error: Interrupted) -> tuple[int, int]:
    """(evaluations, budget used) where an interrupted search stopped, from its message."""
    match = re.match(r"interrupted after (\d+) evaluations \((\d+) of the budget", str(error))
    assert match, str(error)
    return int(match[1]), int(match[2])


def test_an_interrupted_export_keeps_the_old_block_and_resumes_without_searching(wide, tmp_path):
    out = tmp_path / "block.onnx"
    out.write_bytes(b"the previous block")
    with pytest.raises(Interrupted, match=r"after the search \(\d+ evaluations\), while building"):
        extract(wide, out, "greedy", progress=stop_after(0, stage="export"))
    assert out.read_bytes() == b"the previous block"
    assert sorted(os.listdir(tmp_path)) == ["block.onnx", checkpoint_path(out).name]
    resumed = extract(wide, out, "greedy", resume=True)
    assert resumed.paid == 0 and resumed.replayed == resumed.evaluations
    extract(wide, tmp_path / "whole.onnx", "greedy")
    assert out.read_bytes() == (tmp_path / "whole.onnx").read_bytes()


def test_resume_needs_the_checkpoint_of_the_same_run(wide, tmp_path):
    out = tmp_path / "block.onnx"
    with pytest.raises(LegocError, match="no checkpoint .* to resume .*; run without --resume"):
        extract(wide, out, "greedy", resume=True)
    with pytest.raises(Interrupted):
        extract(wide, out, "greedy", progress=stop_after(3))
    with pytest.raises(LegocError, match=r"belongs to another run \(method, seed differ\)"):
        extract(wide, out, "mcts", seed=1, resume=True)
    checkpoint_path(out).write_text("not a checkpoint\n")
    with pytest.raises(LegocError, match="is not a legoc checkpoint"):
        extract(wide, out, "greedy", resume=True)
    assert not out.exists()


def test_a_torn_last_line_is_dropped(wide, tmp_path):
    """A run killed mid-write leaves half a line: resuming reads up to it and goes on."""
    out = tmp_path / "block.onnx"
    with pytest.raises(Interrupted) as info:
        extract(wide, out, "greedy", progress=stop_after(8))
    with checkpoint_path(out).open("a") as handle:
        handle.write('["abc", 0.5')
    resumed = extract(wide, out, "greedy", resume=True)
    assert resumed.replayed == stopped_at(info.value)[0] > 0
    whole = extract(wide, tmp_path / "whole.onnx", "greedy")
    assert out.read_bytes() == (tmp_path / "whole.onnx").read_bytes()
    assert resumed.evaluations == whole.evaluations


def test_without_resume_a_run_starts_over(wide, tmp_path):
    out = tmp_path / "block.onnx"
    with pytest.raises(Interrupted):
        extract(wide, out, "greedy", progress=stop_after(5))
    again = extract(wide, out, "greedy")
    assert again.replayed == 0 and again.paid == again.evaluations
    assert not checkpoint_path(out).exists()


# -- a real Ctrl-C: SIGINT to `legoc extract` in its own process ------------------------------

CLI = [sys.executable, "-c", "from legoc.cli.app import main; main()"]
# The same CLI with every live evaluation 20 ms slower (in the child only), so that the signal
# reliably lands mid-search: the tiny model's whole search otherwise takes well under a second.
# It also restores Python's Ctrl-C handler: a suite started as a background job inherits SIGINT
# ignored (POSIX shells do that to `cmd &`), and Python then leaves it ignored.
SLOW_CLI = [
    sys.executable,
    "-c",
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "import time, legoc.scoring.scorer as s; live = s.Scorer._score; "
    "s.Scorer._score = lambda self, *a, **k: (time.sleep(0.02), live(self, *a, **k))[1]; "
    "from legoc.cli.app import main; main()",
]


def legoc(*args: str, cli: list[str] = CLI) -> list[str]:
    return [*cli, *args]


def test_sigint_mid_search_then_resume(wide, tmp_path):
    out = tmp_path / "block.onnx"
    checkpoint = checkpoint_path(out)
    args = ("extract", str(wide["model"]), "--task", str(wide["spec"]))
    argv = legoc(*args, "--arch", wide["arch"], "-o", str(out))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[2]
    slow = legoc(*args, "--arch", wide["arch"], "-o", str(out), cli=SLOW_CLI)
    child = subprocess.Popen(
        slow, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if checkpoint.is_file() and len(checkpoint.read_text().splitlines()) >= 3:
            break  # the header and two evaluations: the search is under way
        time.sleep(0.005)
    child.send_signal(signal.SIGINT)
    _stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("legoc: ")]
    assert len(lines) == 1 and lines[0].startswith("interrupted after "), stderr
    done = int(lines[0].split()[2])
    assert 2 <= done < 300, lines[0]  # stopped mid-search, not before it or after it
    assert f"checkpoint saved to {checkpoint}; rerun the same command with --resume" in lines[0]
    assert sorted(os.listdir(tmp_path)) == [checkpoint.name]
    resumed = subprocess.run(
        [*argv, "--resume", "--json"], cwd=root, env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["evaluations"] > done
    assert sorted(os.listdir(tmp_path)) == ["block.onnx"]
    whole = tmp_path.parent / f"{tmp_path.name}-whole.onnx"
    extract(wide, whole, None)
    assert out.read_bytes() == whole.read_bytes()


def test_ctrl_c_while_the_block_file_is_being_checked_leaves_no_temporary(
    wide, tmp_path, monkeypatch
):
    """Interrupted between writing the temporary file and moving it into place (during the
    onnxruntime parity check): the temporary is removed and the old block stays."""
    import legoc.export.writer

    def interrupted_parity(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "block.onnx"
    out.write_bytes(b"the previous block")
    monkeypatch.setattr(legoc.export.writer, "parity", interrupted_parity)
    with pytest.raises(Interrupted, match="while building the block"):
        extract(wide, out, "greedy")
    assert out.read_bytes() == b"the previous block"
    assert sorted(os.listdir(tmp_path)) == ["block.onnx", checkpoint_path(out).name]
