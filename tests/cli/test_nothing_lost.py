"""Nothing is lost (issue 13, parts 2 and 3): no command overwrites one of its inputs or
replaces what is not a regular file, outputs get the modes `open()` would give them, two runs
cannot share one output, and every failure -- a full disk, SIGTERM, malformed metadata -- is one
line with its exit code, no partial file and the inputs intact."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from legoc import api
from legoc.cli.app import app
from legoc.errors import LegocError
from legoc.runtime.files import LOCK_SUFFIX
from legoc.scoring import prepare as prepare_module
from legoc.scoring.journal import checkpoint_path
from tests.helpers import assert_one_error_line, error_lines, write_task
from tests.runtime.helpers import external_block, linear_model, rows, save_linear

runner = CliRunner()


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its hash (symlinks and special files by kind)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            files[str(path)] = f"-> {os.readlink(path)}"
        elif path.is_file():
            files[str(path)] = digest(path)
        elif not path.is_dir():
            files[str(path)] = stat.filemode(path.stat().st_mode)
    return files


def invoke(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def extract_args(task: dict, out: Path) -> list:
    return ["extract", task["model"], "--task", task["spec"], "--arch", task["arch"], "-o", out]


def out_dir(tmp_path: Path) -> Path:
    """An empty folder for a command's output (the task folder lives beside it)."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def refused_and_intact(result, needles: tuple[str, ...], folder: Path, before: dict) -> None:
    """One error line, exit 2, and every file of `folder` exactly as it was (no temporary,
    checkpoint or lock file left)."""
    assert_one_error_line(result, needles, 2)
    assert snapshot(folder) == before


@pytest.fixture
def linear_block(tmp_path) -> Path:
    folder = tmp_path / "blocks"
    folder.mkdir()
    return save_linear(folder / "block.onnx", 6, 4, task="linear")


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(saved)


# -- 2. an output that is one of the command's inputs --------------------------------------


@pytest.mark.parametrize(
    "target, label",
    [
        ("model", "the model"),
        ("spec", "the task spec"),
        ("data/search.pt", "data.search"),
        ("data/iid.pt", "data.eval.iid"),
        ("hardlink", "the model"),
        ("symlink", "the model"),
    ],
)
def test_extract_never_writes_over_an_input(mlp_task, target, label):
    folder = mlp_task["folder"]
    if target == "hardlink":
        out = folder / "model-link.pt"
        os.link(mlp_task["model"], out)
    elif target == "symlink":
        out = folder / "model-symlink.pt"
        out.symlink_to(mlp_task["model"].name)
    else:
        out = mlp_task.get(target) or folder / target
    before = snapshot(folder)
    result = invoke(*extract_args(mlp_task, out))
    refused_and_intact(result, (f"output {out}", f"is the same file as {label}"), folder, before)


def test_extract_refuses_its_arch_file_as_output(mlp_task):
    arch = mlp_task["folder"] / "arch.py"
    arch.write_text("from tests.helpers import make_tiny_mlp\n")
    before = snapshot(mlp_task["folder"])
    args = extract_args({**mlp_task, "arch": f"{arch}:make_tiny_mlp"}, arch)
    result = invoke(*args)
    refused_and_intact(result, ("same file as the --arch file",), mlp_task["folder"], before)


def test_baseline_refuses_its_like_block_as_output(mlp_task, linear_block):
    before = snapshot(linear_block.parent)
    result = invoke(
        "baseline", "--task", mlp_task["spec"], "--like", linear_block, "-o", linear_block
    )
    refused_and_intact(result, ("same file as --like",), linear_block.parent, before)


def test_compose_refuses_one_of_its_parts_as_output(linear_block):
    second = save_linear(linear_block.parent / "second.onnx", 4, 3, input_name="logits")
    before = snapshot(linear_block.parent)
    args = ["compose", "sequential", linear_block, second, "-o", second]
    result = invoke(*args)
    refused_and_intact(result, ("same file as part 2",), linear_block.parent, before)


def test_card_refuses_its_block_as_output(linear_block):
    before = snapshot(linear_block.parent)
    result = invoke("card", linear_block, "-o", linear_block)
    refused_and_intact(result, ("same file as the block",), linear_block.parent, before)


def test_run_refuses_its_input_file_as_output(linear_block):
    data = linear_block.parent / "inputs.npz"
    np.savez(data, x=rows((5, 6)))
    before = snapshot(linear_block.parent)
    result = invoke("run", linear_block, data, "-o", data)
    refused_and_intact(result, ("same file as the input file",), linear_block.parent, before)


def test_deploy_refuses_to_replace_its_block(linear_block):
    before = snapshot(linear_block.parent)
    result = invoke("deploy", linear_block, "--target", "ort", "-o", linear_block.parent)
    refused_and_intact(result, ("same file as the block",), linear_block.parent, before)


def test_catalog_add_refuses_to_copy_an_entry_onto_itself(tmp_path, linear_block):
    catalog = tmp_path / "cat"
    assert invoke("catalog", "add", catalog, linear_block).exit_code == 0
    entry = catalog / "blocks" / "block.onnx"
    before = snapshot(catalog)
    result = invoke("catalog", "add", catalog, entry, "--replace")
    refused_and_intact(result, ("same file as the block",), catalog, before)


def test_compare_force_never_deletes_an_input(mlp_task):
    """The task folder passed as the report folder, looking like an earlier report."""
    folder = mlp_task["folder"]
    (folder / "report.json").write_text('{"legoc_compare": 1}')
    before = snapshot(folder)
    args = ["compare", mlp_task["model"], "--task", mlp_task["spec"], "--arch", mlp_task["arch"]]
    result = invoke(*args, "-o", folder, "--force", "--seeds", "1")
    refused_and_intact(
        result, (f"output {folder}: holds the model", "pick another"), folder, before
    )


def test_compare_force_replaces_only_an_earlier_report(mlp_task, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    (mine / "report.json").write_text('{"not": "a legoc report"}')
    before = snapshot(mine)
    args = ["compare", mlp_task["model"], "--task", mlp_task["spec"], "--arch", mlp_task["arch"]]
    result = invoke(*args, "-o", mine, "--force", "--seeds", "1")
    needles = ("--force replaces only an earlier legoc compare report", "choose a new folder")
    refused_and_intact(result, needles, mine, before)


# -- 2. an output that is not a regular file ------------------------------------------------


def special_file(folder: Path, kind: str) -> Path:
    path = folder / f"{kind}.onnx"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        try:  # a character device like /dev/null (major 1, minor 3), made in the test's folder
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("making a device node needs root")
    return path


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_extract_never_replaces_a_fifo_or_a_device(mlp_task, tmp_path, kind):
    out = special_file(out_dir(tmp_path), kind)
    mode = out.stat().st_mode
    what = "a FIFO" if kind == "fifo" else "a device"
    result = invoke(*extract_args(mlp_task, out))
    assert_one_error_line(result, (f"output {out}: is {what}", "not a regular file"))
    assert out.lstat().st_mode == mode  # still the same special file
    assert sorted(os.listdir(out.parent)) == [out.name]


@pytest.mark.parametrize("command", ["card", "run", "compose"])
def test_runtime_writers_never_replace_a_fifo(linear_block, command):
    folder = linear_block.parent
    out = folder / ("out.npz" if command == "run" else "out.md")
    os.mkfifo(out)
    data = folder / "inputs.npz"
    np.savez(data, x=rows((3, 6)))
    args = {
        "card": ["card", linear_block, "-o", out],
        "run": ["run", linear_block, data, "-o", out],
        "compose": ["compose", "parallel", linear_block, linear_block, "-o", out],
    }[command]
    if command == "compose":
        args += ["--name", "a", "--name", "b"]
    before = snapshot(folder)
    result = invoke(*args)
    refused_and_intact(result, ("is a FIFO", "not a regular file"), folder, before)
    assert stat.S_ISFIFO(out.lstat().st_mode)


def test_a_symlink_to_a_regular_file_is_replaced_as_before(linear_block, tmp_path):
    """Only non-files are refused: a symlink output still gets the new file in its place."""
    target = tmp_path / "old.md"
    target.write_text("old card")
    link = tmp_path / "card.md"
    link.symlink_to(target)
    result = invoke("card", linear_block, "-o", link)
    assert result.exit_code == 0, result.output
    assert link.is_file() and not link.is_symlink() and target.read_text() == "old card"


# -- 2. modes: new files follow the umask, replaced files keep theirs ----------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_runtime_outputs_follow_the_umask(linear_block, tmp_path, umask, mask, expected):
    umask(mask)
    data = tmp_path / "inputs.npz"
    np.savez(data, x=rows((3, 6)))
    out = tmp_path / "out"
    out.mkdir()
    assert invoke("card", linear_block, "-o", out / "card.md").exit_code == 0
    assert invoke("run", linear_block, data, "-o", out / "y.npz").exit_code == 0
    assert invoke("catalog", "add", out / "cat", linear_block).exit_code == 0
    for path in (out / "card.md", out / "y.npz", out / "cat/index.json"):
        assert mode_of(path) == expected, path
    assert mode_of(out / "cat/blocks/block.onnx") == expected


def test_extract_block_follows_the_umask_and_a_replaced_block_keeps_its_mode(
    mlp_task, tmp_path, umask
):
    umask(0o022)
    out = tmp_path / "block.onnx"
    assert invoke(*extract_args(mlp_task, out)).exit_code == 0
    assert mode_of(out) == 0o644
    os.chmod(out, 0o640)
    assert invoke(*extract_args(mlp_task, out)).exit_code == 0
    assert mode_of(out) == 0o640


def test_a_replaced_card_keeps_its_mode(linear_block, tmp_path, umask):
    umask(0o077)
    card = tmp_path / "card.md"
    card.write_text("old")
    os.chmod(card, 0o644)
    assert invoke("card", linear_block, "-o", card).exit_code == 0
    assert mode_of(card) == 0o644 and card.read_text() != "old"


# -- 2. the checkpoint journal and the output lock -----------------------------------------


def test_the_journal_never_writes_through_a_planted_symlink(mlp_task, tmp_path):
    """The journal's temporary used to be `<output>.legoc-ckpt.tmp`, a fixed name whose symlink
    was followed: whatever it pointed to was overwritten."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out" / "block.onnx"
    out.parent.mkdir()
    planted = checkpoint_path(out).with_name(checkpoint_path(out).name + ".tmp")
    planted.symlink_to(victim)
    result = invoke(*extract_args(mlp_task, out))
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious"
    assert sorted(os.listdir(out.parent)) == sorted(["block.onnx", planted.name])


def test_a_second_run_on_the_same_output_is_refused_and_takes_nothing(mlp_task, tmp_path):
    out = tmp_path / "block.onnx"
    checkpoint = checkpoint_path(out)
    checkpoint.write_text("the first run's checkpoint\n")
    lock = out.with_name(f".{out.name}{LOCK_SUFFIX}")
    with open(lock, "w") as held:  # the first run, still searching
        fcntl.flock(held, fcntl.LOCK_EX)
        before = snapshot(tmp_path)
        result = invoke(*extract_args(mlp_task, out))
        refused_and_intact(
            result, (f"output {out}: another legoc run is writing it",), tmp_path, before
        )
    assert checkpoint.read_text() == "the first run's checkpoint\n"


def test_the_lock_is_released_and_removed(mlp_task, tmp_path):
    out = out_dir(tmp_path) / "block.onnx"
    for _ in range(2):  # a second run after the first one ended takes the lock again
        result = invoke(*extract_args(mlp_task, out))
        assert result.exit_code == 0, result.output
        assert sorted(os.listdir(out.parent)) == ["block.onnx"]


# -- 3. write failures outside the atomic writer: a full disk ------------------------------


def test_a_full_disk_under_the_journal_is_one_line(mlp_task, tmp_path, monkeypatch):
    """Appending evaluations to the journal fails with ENOSPC (its handle writes to /dev/full)."""
    from legoc.scoring.journal import Journal

    rewrite = Journal._rewrite

    def onto_a_full_disk(self, entries):
        rewrite(self, entries)
        self._handle.close()
        self._handle = open("/dev/full", "a", encoding="utf-8")  # noqa: SIM115 - the journal's own handle, closed by it

    monkeypatch.setattr(Journal, "_rewrite", onto_a_full_disk)
    out = out_dir(tmp_path) / "block.onnx"
    out.write_bytes(b"the previous block")
    result = invoke(*extract_args(mlp_task, out))
    needles = (f"checkpoint {checkpoint_path(out)}: cannot write", "No space left on device")
    assert_one_error_line(result, needles)
    assert out.read_bytes() == b"the previous block"
    assert sorted(os.listdir(out.parent)) == ["block.onnx"]


def test_a_full_disk_under_the_export_temporary_is_one_line(mlp_task, tmp_path, monkeypatch):
    """torch.onnx.export writes the model to a temporary file first: there the disk is full."""

    def export_to_a_full_disk(module, args, path, **kwargs):
        with open("/dev/full", "wb") as full:
            full.write(b"x" * (1 << 16))
            full.flush()

    monkeypatch.setattr(torch.onnx, "export", export_to_a_full_disk)
    out = out_dir(tmp_path) / "block.onnx"
    out.write_bytes(b"the previous block")
    result = invoke(*extract_args(mlp_task, out))
    needles = ("export: cannot write the temporary ONNX file", "No space left on device", "TMPDIR")
    assert_one_error_line(result, needles)
    assert out.read_bytes() == b"the previous block"
    assert sorted(os.listdir(out.parent)) == ["block.onnx"]


def test_any_other_system_error_is_one_line_with_exit_2(mlp_task, tmp_path, monkeypatch):
    """An OSError no writer wrapped (here: reading the spec) is bad input, not a bug report."""

    def unreadable(path, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(prepare_module, "load_task", unreadable)
    result = invoke(*extract_args(mlp_task, tmp_path / "block.onnx"))
    assert_one_error_line(result, ("Input/output error", "spec.yaml"))
    assert os.listdir(tmp_path) == ["task"]


# -- 3. bad input said in one line -----------------------------------------------------------


def test_eval_splits_are_checked_before_the_search(mlp_task, tmp_path):
    data = mlp_task["folder"] / "data" / "iid.pt"
    split = torch.load(data, weights_only=True)
    torch.save({"x": split["x"], "y": torch.full_like(split["y"], 9)}, data)
    stages = []
    with pytest.raises(LegocError, match=r"data.eval.iid: .*labels 'y'"):
        api.extract(
            mlp_task["model"],
            mlp_task["spec"],
            tmp_path / "block.onnx",
            arch=mlp_task["arch"],
            progress=lambda stage, done, total: stages.append(stage),
        )
    assert set(stages) <= {"capture", "analysis"}  # refused before the search began
    assert os.listdir(tmp_path) == ["task"]


@pytest.mark.parametrize("seed", ["-1", str(2**63)])
def test_baseline_seed_out_of_range(mlp_task, tmp_path, seed):
    out = tmp_path / "a.onnx"
    result = invoke(
        "baseline", "--task", mlp_task["spec"], "--params", 50, "--seed", seed, "-o", out
    )
    assert_one_error_line(result, ("--seed: must be an integer in [0, 2**63 - 1]",))
    assert not out.exists()


def test_compare_seeds_past_the_seed_range(tmp_path):
    task = write_task(tmp_path / "task", "mlp", spec={"search": {"seed": 2**63 - 1}})
    args = ["compare", task["model"], "--task", task["spec"], "--arch", task["arch"]]
    result = invoke(*args, "-o", tmp_path / "report", "--seeds", "2")
    assert_one_error_line(result, ("--seeds 2 - 1: must be an integer in [0, 2**63 - 1]",))
    assert os.listdir(tmp_path) == ["task"]


class Gone(torch.nn.Module):
    """A model class whose module is gone by the time the model file is loaded."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(x)


def test_a_pickled_model_whose_class_cannot_be_imported(mlp_task, monkeypatch):
    import types

    module = types.ModuleType("legoc_test_gone_module")
    Gone.__module__ = module.__name__
    module.Gone = Gone
    monkeypatch.setitem(sys.modules, module.__name__, module)
    path = mlp_task["folder"] / "whole.pt"
    torch.save(Gone(), path)
    monkeypatch.delitem(sys.modules, module.__name__)
    before = snapshot(mlp_task["folder"])
    args = ["extract", path, "--task", mlp_task["spec"], "--trust-model"]
    result = invoke(*args, "-o", mlp_task["folder"].parent / "block.onnx")
    needles = ("class cannot be imported", "legoc_test_gone_module", "PYTHONPATH", "--arch")
    refused_and_intact(result, needles, mlp_task["folder"], before)


def test_an_arch_that_does_not_import_suggests_the_file_form(mlp_task, tmp_path):
    args = extract_args({**mlp_task, "arch": "no_such_pkg_legoc.models:make"}, tmp_path / "b.onnx")
    result = invoke(*args)
    assert_one_error_line(result, ("cannot import no_such_pkg_legoc.models", "file.py:factory"))


def block_with_metadata(folder: Path, **metadata: str) -> Path:
    model = linear_model(6, 4, task="linear")
    onnx.helper.set_model_props(model, {"legoc.task": "linear", **metadata})
    path = folder / "block.onnx"
    onnx.save(model, str(path))
    return path


MALFORMED = [
    pytest.param(
        {"legoc.rationale": "{not json"}, "'legoc.rationale' is not valid JSON", id="json"
    ),
    pytest.param({"legoc.scores": "[1, 2]"}, "'legoc.scores' is a JSON list", id="not-an-object"),
    pytest.param(
        {"legoc.rationale": json.dumps({"total": {"fc1": "eight"}, "kept": {"fc1": [0]}})},
        "legoc.* metadata is malformed",
        id="wrong-shape-inside",
    ),
    pytest.param(
        {"legoc.rationale": json.dumps({"params": [1, 2]})},
        "legoc.* metadata is malformed",
        id="params-not-a-mapping",
    ),
]


@pytest.mark.parametrize("metadata, needle", MALFORMED)
def test_card_with_malformed_metadata_is_one_line(tmp_path, metadata, needle):
    block = block_with_metadata(tmp_path, **metadata)
    before = snapshot(tmp_path)
    result = invoke("card", block)
    refused_and_intact(result, (f"block {block}", needle), tmp_path, before)


@pytest.mark.parametrize("metadata, needle", [MALFORMED[0], MALFORMED[3]])  # what add reads
def test_catalog_add_with_malformed_metadata_is_one_line(tmp_path, metadata, needle):
    folder = tmp_path / "in"
    folder.mkdir()
    block = block_with_metadata(folder, **metadata)
    result = invoke("catalog", "add", tmp_path / "cat", block)
    assert_one_error_line(result, (f"block {block}", needle))
    assert sorted(os.listdir(tmp_path)) == ["in"]  # no half-made catalogue


@pytest.mark.parametrize(
    "location, needle", [("loop.bin", "a symlink loop"), ("wei\x00ghts.bin", "not a valid path")]
)
def test_external_data_location_that_cannot_be_a_file(tmp_path, location, needle):
    block = external_block(tmp_path / "b", location)
    (tmp_path / "b" / "loop.bin").symlink_to("loop.bin")
    data = tmp_path / "inputs.npz"
    np.savez(data, x=rows((3, 6)))
    result = invoke("run", block, data)
    assert_one_error_line(result, (f"block {block}", "keeps its data in", needle))


# -- 3. SIGTERM: like Ctrl-C, with exit code 143 -------------------------------------------


def test_sigterm_in_process_is_exit_143_with_nothing_written(mlp_task, tmp_path, monkeypatch):
    """The CLI's handler turns SIGTERM into the Ctrl-C path: the message says where the run
    stopped, the checkpoint stays, the old block stays, no temporary is left."""
    from legoc.cli import app as cli

    extract = api.extract

    def terminated_midway(*args, progress=None, **kwargs):
        def progress_then_sigterm(stage, done, total):
            if stage == "search" and done >= 3:
                os.kill(os.getpid(), signal.SIGTERM)

        return extract(*args, progress=progress_then_sigterm, **kwargs)

    monkeypatch.setattr(cli.api, "extract", terminated_midway)
    out = out_dir(tmp_path) / "block.onnx"
    out.write_bytes(b"the previous block")
    previous = signal.getsignal(signal.SIGTERM)
    result = invoke(*extract_args(mlp_task, out))
    assert signal.getsignal(signal.SIGTERM) == previous  # restored once the command ends
    assert result.exit_code == 143, result.output
    lines = error_lines(result)  # after the status lines of the phases that ended
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(
        rf"stopped by SIGTERM after \d+ evaluations \(\d+ of the budget of 200 used\); nothing "
        rf"was written; checkpoint "
        rf"saved to {re.escape(str(checkpoint_path(out)))}; rerun the same command with --resume "
        "to continue",
        lines[0],
    ), lines[0]
    assert out.read_bytes() == b"the previous block"
    assert sorted(os.listdir(out.parent)) == ["block.onnx", checkpoint_path(out).name]


# Every live evaluation 20 ms slower in the child only, so the signal lands mid-search (as in
# tests/test_resume.py); SIGTERM needs no handler restored: Python leaves it at the default.
SLOW_CLI = [
    sys.executable,
    "-c",
    "import time, legoc.scoring.scorer as s; live = s.Scorer._score; "
    "s.Scorer._score = lambda self, *a, **k: (time.sleep(0.02), live(self, *a, **k))[1]; "
    "from legoc.cli.app import main; main()",
]


def test_sigterm_mid_search_then_resume(tmp_path):
    """What `timeout`, systemd, Kubernetes and CI send: exit 143, one line, no partial file, a
    checkpoint that --resume continues to the same block."""
    task = write_task(
        tmp_path / "task", "wide", n=300, spec={"search": {"method": "greedy", "budget": 300}}
    )
    out = out_dir(tmp_path) / "block.onnx"
    checkpoint = checkpoint_path(out)
    args = [str(a) for a in extract_args(task, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [*SLOW_CLI, *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if checkpoint.is_file() and len(checkpoint.read_text().splitlines()) >= 3:
            break  # the header and two evaluations: the search is under way
        time.sleep(0.005)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 143, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("legoc: ")]
    assert len(lines) == 1 and lines[0].startswith("stopped by SIGTERM after "), stderr
    assert f"checkpoint saved to {checkpoint}; rerun the same command with --resume" in lines[0]
    assert sorted(os.listdir(out.parent)) == [checkpoint.name]  # no block, temporary or lock
    resumed = api.extract(task["model"], task["spec"], out, arch=task["arch"], resume=True)
    assert resumed.replayed >= 2  # the evaluations paid for before SIGTERM
    assert sorted(os.listdir(out.parent)) == ["block.onnx"]
    whole = tmp_path / "whole.onnx"
    api.extract(task["model"], task["spec"], whole, arch=task["arch"])
    assert out.read_bytes() == whole.read_bytes()
