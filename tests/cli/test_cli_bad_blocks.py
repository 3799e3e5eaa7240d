"""The bad-input matrix of the block-side commands (run, compose, deploy, catalog, card): every
broken or hostile block, every mismatched composition and every unwritable output gets one
`error:` line naming the problem and the fix, exit code 2, no traceback, and no output file.

Cases are tables: a bad block is tried against every command that reads a block."""

from __future__ import annotations

import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from typer.testing import CliRunner

from legoc.cli.app import app
from tests.helpers import assert_one_error_line, error_lines
from tests.runtime import helpers

runner = CliRunner()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, dict]:
    return helpers.tiny_blocks(tmp_path_factory.getbasetemp() / "tiny-blocks")


@pytest.fixture
def out(tmp_path) -> Path:
    """An empty folder every command writes into: it must still be empty after a refusal."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_refused(result, needles: tuple[str, ...], out: Path, exit_code: int = 2) -> None:
    """One `error:` line naming the problem, exit 2, no traceback, nothing left in `out`."""
    assert_one_error_line(result, needles, exit_code)
    assert sorted(os.listdir(out)) == [], "a partial or temporary file was left"


# -- bad blocks: each builds a broken block in `folder` from a good one -----------------------


def missing(good: Path, folder: Path) -> Path:
    return folder / "missing.onnx"


def empty(good: Path, folder: Path) -> Path:
    (folder / "empty.onnx").write_bytes(b"")
    return folder / "empty.onnx"


def truncated(good: Path, folder: Path) -> Path:
    data = good.read_bytes()
    (folder / "half.onnx").write_bytes(data[: len(data) // 2])
    return folder / "half.onnx"


def random_bytes(good: Path, folder: Path) -> Path:
    (folder / "noise.onnx").write_bytes(random.Random(0).randbytes(4096))
    return folder / "noise.onnx"


def unknown_operator(good: Path, folder: Path) -> Path:
    """Parses as ONNX, but its graph uses an operator no runtime has."""
    model = onnx.load(str(good))
    model.graph.node[0].op_type = "NoSuchOperator"
    path = folder / "unknown_op.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def wrong_weight_size(good: Path, folder: Path) -> Path:
    """Parses as ONNX, but a weight's bytes do not match its declared shape."""
    model = onnx.load(str(good))
    tensor = next(t for t in model.graph.initializer if len(t.dims) == 2)
    data = onnx.numpy_helper.to_array(tensor)
    tensor.ClearField("float_data")
    tensor.raw_data = data.tobytes()[:-4]
    path = folder / "short_weight.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def external(location: str, place=None):
    """A block whose weights live in a side file, then pointed at `location`; `place(folder)`
    puts the side file where the location leads (so the refusal is not merely 'missing')."""

    def case(good: Path, folder: Path) -> Path:
        inner = folder / "block"
        inner.mkdir()
        path = inner / "block.onnx"
        onnx.save_model(
            onnx.load(str(good)),
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="weights.bin",
            size_threshold=0,
        )
        model = onnx.load(str(path), load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location.format(folder=folder)
        path.write_bytes(model.SerializeToString())
        if place is not None:
            place(folder)
        else:
            (inner / "weights.bin").unlink()
        return path

    return case


def move_weights_up(folder: Path) -> None:
    os.replace(folder / "block" / "weights.bin", folder / "weights.bin")


def link_weights_outside(folder: Path) -> None:
    move_weights_up(folder)
    os.symlink(folder / "weights.bin", folder / "block" / "link.bin")


BAD_BLOCKS = [
    pytest.param(missing, ("missing.onnx", "file not found"), id="missing"),
    pytest.param(empty, ("empty.onnx", "not an ONNX model"), id="empty"),
    pytest.param(truncated, ("half.onnx", "not an ONNX model"), id="truncated"),
    pytest.param(random_bytes, ("noise.onnx", "not an ONNX model"), id="random-bytes"),
    pytest.param(unknown_operator, ("unknown_op.onnx", "NoSuchOperator"), id="unknown-operator"),
    pytest.param(wrong_weight_size, ("short_weight.onnx",), id="weight-bytes-short"),
    pytest.param(
        external("../weights.bin", move_weights_up),
        ("'../weights.bin'", "outside the block's folder"),
        id="external-data-outside-folder",
    ),
    pytest.param(
        external("{folder}/weights.bin", move_weights_up),
        ("weights.bin'", "absolute path"),
        id="external-data-absolute-path",
    ),
    pytest.param(
        external("link.bin", link_weights_outside),
        ("'link.bin'", "outside the block's folder"),
        id="external-data-symlink-outside",
    ),
    pytest.param(
        external("weights.bin"),
        ("'weights.bin'", "does not exist", "copy the block together with its data files"),
        id="external-data-missing",
    ),
]


def npz_for_mlp(folder: Path) -> Path:
    path = folder / "in.npz"
    np.savez(path, x=helpers.rows((3, 6)))
    return path


# Each command that reads a block: argv with BLOCK in place of the bad block, writing to `out`.
BLOCK_COMMANDS = {
    "run": lambda bad, good, data, out: ["run", bad, data, "-o", out / "o.npz"],
    "compose-sequential": lambda bad, good, data, out: [
        "compose",
        "sequential",
        bad,
        helpers.save_linear(out.parent / "head.onnx", 4, 2, input_name="logits", output_name="p"),
        "-o",
        out / "c.onnx",
    ],
    "compose-parallel": lambda bad, good, data, out: [
        "compose",
        "parallel",
        bad,
        good,
        "-o",
        out / "c.onnx",
    ],
    "deploy": lambda bad, good, data, out: ["deploy", bad, "--target", "ort", "-o", out / "d"],
    "catalog-add": lambda bad, good, data, out: ["catalog", "add", out / "catalog", bad],
    "card": lambda bad, good, data, out: ["card", bad, "-o", out / "card.md"],
}


@pytest.mark.parametrize("command", sorted(BLOCK_COMMANDS))
@pytest.mark.parametrize("make_bad, needles", BAD_BLOCKS)
def test_a_bad_block_is_refused_by_every_command(tiny, tmp_path, out, command, make_bad, needles):
    good = tiny["mlp"]["block"]
    bad = make_bad(good, tmp_path)
    argv = BLOCK_COMMANDS[command](bad, good, npz_for_mlp(tmp_path), out)
    assert_refused(cli(*argv), needles, out)


# -- compositions whose interfaces do not match --------------------------------------------


def linear(folder: Path, name: str, n_in: int, n_out: int, **kwargs) -> Path:
    return helpers.save_linear(folder / f"{name}.onnx", n_in, n_out, **kwargs)


def seq_width(tiny, folder):
    return ["sequential", tiny["mlp"]["block"], linear(folder, "wide", 5, 2), "--map", "logits=x"]


def seq_dtype(tiny, folder):
    head = linear(folder, "f64", 4, 2, dtype=TensorProto.DOUBLE)
    return ["sequential", tiny["mlp"]["block"], head, "--map", "logits=x"]


def seq_no_source(tiny, folder):
    return ["sequential", tiny["mlp"]["block"], linear(folder, "head", 4, 2, input_name="h")]


def seq_map_unknown(tiny, folder):
    head = linear(folder, "head", 4, 2, input_name="h")
    return ["sequential", tiny["mlp"]["block"], head, "--map", "scores=h"]


def seq_opset(tiny, folder):
    return ["sequential", tiny["mlp"]["block"], linear(folder, "old", 4, 2, opset=13)]


def seq_ir_version(tiny, folder):
    head = linear(folder, "ir7", 4, 2, input_name="logits", output_name="out", ir_version=7)
    return ["sequential", tiny["mlp"]["block"], head]


def par_inputs(tiny, folder):
    return ["parallel", tiny["mlp"]["block"], tiny["cnn"]["block"]]


def par_concat_two_outputs(tiny, folder):
    pair = folder / "pair.onnx"
    made = cli("compose", "parallel", tiny["mlp"]["block"], tiny["mlp2"]["block"], "-o", pair)
    assert made.exit_code == 0, made.output
    return ["parallel", pair, tiny["mlp"]["block"], "--concat"]


def one_block(tiny, folder):
    return ["parallel", tiny["mlp"]["block"]]


def name_count(tiny, folder):
    return ["parallel", tiny["mlp"]["block"], tiny["mlp2"]["block"], "--name", "a"]


BAD_COMPOSITIONS = [
    pytest.param(
        seq_width,
        ("float32[batch,4]", "float32[batch,5]"),
        id="sequential-width-mismatch",
    ),
    pytest.param(seq_dtype, ("float32", "float64"), id="sequential-dtype-mismatch"),
    pytest.param(seq_no_source, ("has no source", "--map logits=h"), id="sequential-unfed-input"),
    pytest.param(seq_map_unknown, ("--map scores=h", "'scores'"), id="sequential-map-unknown"),
    pytest.param(seq_opset, ("opset", "13", "17", "convert_version"), id="opset-mismatch"),
    pytest.param(seq_ir_version, ("IR version 7",), id="ir-version-mismatch"),
    pytest.param(
        par_inputs, ("float32[batch,6]", "float32[batch,1,8,8]"), id="parallel-input-mismatch"
    ),
    pytest.param(
        par_concat_two_outputs, ("--concat", "pair.onnx", "2 outputs"), id="parallel-concat-arity"
    ),
    pytest.param(one_block, ("at least two blocks",), id="one-block"),
    pytest.param(name_count, ("1 names for 2 blocks",), id="name-count"),
]


@pytest.mark.parametrize("make_args, needles", BAD_COMPOSITIONS)
def test_a_mismatched_composition_is_refused(tiny, tmp_path, out, make_args, needles):
    kind, *rest = make_args(tiny, tmp_path)
    assert_refused(cli("compose", kind, *rest, "-o", out / "c.onnx"), needles, out)


# -- outputs that cannot be written ---------------------------------------------------------


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder the process may not create files in. Under root, permission bits do not bind,
    so there the read-only /sys (Linux) plays the part."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        if not sys.platform.startswith("linux") or not Path("/sys").is_dir():
            pytest.skip("running as root without a read-only folder to write into")
        return Path("/sys")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


# Each command with an output: argv writing to `target` (a file, or a folder it creates).
OUTPUT_COMMANDS = {
    "extract": lambda t, target: [
        "extract",
        t["mlp"]["model"],
        "--task",
        t["mlp"]["spec"],
        "--arch",
        t["mlp"]["arch"],
        "-o",
        target / "block.onnx",
    ],
    "run": lambda t, target: [
        "run",
        t["mlp"]["block"],
        t["mlp"]["folder"] / "data" / "iid.pt",
        "-o",
        target / "o.npz",
    ],
    "compose": lambda t, target: [
        "compose",
        "parallel",
        t["mlp"]["block"],
        t["mlp2"]["block"],
        "-o",
        target / "c.onnx",
    ],
    "card": lambda t, target: ["card", t["mlp"]["block"], "-o", target / "card.md"],
    "deploy": lambda t, target: [
        "deploy",
        t["mlp"]["block"],
        "--target",
        "ort",
        "-o",
        target / "d",
    ],
    "catalog-add": lambda t, target: ["catalog", "add", target / "catalog", t["mlp"]["block"]],
}


@pytest.mark.parametrize("command", sorted(OUTPUT_COMMANDS))
def test_an_unwritable_output_folder_is_refused(tiny, tmp_path, command):
    folder = unwritable_folder(tmp_path)
    before = sorted(os.listdir(folder))
    result = cli(*OUTPUT_COMMANDS[command](tiny, folder))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(folder) in lines[0] and ("not writable" in lines[0] or "cannot" in lines[0])
    assert sorted(os.listdir(folder)) == before


@pytest.mark.parametrize("command", sorted(OUTPUT_COMMANDS))
def test_an_output_under_a_file_is_refused(tiny, tmp_path, command):
    parent = tmp_path / "a-file"
    parent.write_text("not a folder")
    result = cli(*OUTPUT_COMMANDS[command](tiny, parent))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "a-file" in lines[0] and "not a folder" in lines[0], lines[0]
    assert parent.read_text() == "not a folder"


# -- an existing output is replaced only once the new file is complete ------------------------


# command -> (module, save function, position of the path argument) it writes through
FAILING_WRITES = {
    "extract": ("onnx", "save", 1),
    "compose": ("onnx", "save", 1),
    "run": ("numpy", "savez", 0),
}


def fail_midway(monkeypatch, module: str, save: str, where: int) -> None:
    """Make `module.save` write half a file and then fail as a full disk does."""
    import importlib

    owner = importlib.import_module(module)

    def write(*args, **kwargs):
        target = args[where]
        if hasattr(target, "write"):
            target.write(b"half a file")
        else:
            Path(target).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(owner, save, write)


@pytest.mark.parametrize("command", sorted(FAILING_WRITES))
def test_a_write_that_fails_midway_keeps_the_old_output(tiny, tmp_path, monkeypatch, command):
    target = tmp_path / "target"
    target.mkdir()
    argv = OUTPUT_COMMANDS[command](tiny, target)
    final = Path(argv[argv.index("-o") + 1])
    final.write_bytes(b"the previous output, must survive")
    fail_midway(monkeypatch, *FAILING_WRITES[command])
    result = cli(*argv)
    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and "No space left on device" in lines[0], result.stderr
    assert str(final) in lines[0] and "unchanged" in lines[0]
    assert final.read_bytes() == b"the previous output, must survive"
    assert sorted(os.listdir(target)) == [final.name], "a temporary file was left"


def test_a_failed_compose_leaves_the_existing_output_untouched(tiny, tmp_path):
    final = tmp_path / "c.onnx"
    shutil.copy(tiny["mlp"]["block"], final)
    before = final.read_bytes()
    result = cli("compose", "parallel", tiny["mlp"]["block"], tiny["cnn"]["block"], "-o", final)
    assert result.exit_code == 2
    assert final.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.onnx"]


# -- other inputs of the block-side commands: data files, task specs, catalogue indexes ------


def input_file(content: bytes, name: str = "in.npz"):
    def case(tiny, folder):
        (folder / name).write_bytes(content)
        return ["run", tiny["mlp"]["block"], folder / name, "-o", folder / "out" / "o.npz"]

    return case


def object_npy(tiny, folder):
    np.save(folder / "x.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    return ["run", tiny["mlp"]["block"], folder / "x.npy", "-o", folder / "out" / "o.npz"]


def truncated_npz(tiny, folder):
    np.savez(folder / "in.npz", x=helpers.rows((50, 6)))
    data = (folder / "in.npz").read_bytes()
    return input_file(data[: len(data) // 2])(tiny, folder)


def deploy_spec(text: str):
    def case(tiny, folder):
        (folder / "spec.yaml").write_text(text)
        block = tiny["mlp"]["block"]
        return [
            "deploy",
            block,
            "--target",
            "ort",
            "--task",
            folder / "spec.yaml",
            "-o",
            folder / "out" / "d",
        ]

    return case


def corrupt_index(tiny, folder):
    catalog = folder / "out" / "cat"
    assert cli("catalog", "add", catalog, tiny["mlp"]["block"]).exit_code == 0
    (catalog / "index.json").write_text("{not json")
    return ["catalog", "list", catalog]


OTHER_INPUTS = [
    pytest.param(
        lambda tiny, folder: ["run", tiny["mlp"]["block"], folder / "none.npz"],
        ("none.npz", "not found"),
        id="run-input-missing",
    ),
    pytest.param(
        input_file(random.Random(0).randbytes(2000)),
        ("in.npz", "neither an .npz nor a tensor file"),
        id="run-input-random-bytes",
    ),
    pytest.param(truncated_npz, ("in.npz",), id="run-input-truncated-npz"),
    pytest.param(object_npy, ("x.npy", "not a readable numeric .npy"), id="run-input-object-npy"),
    pytest.param(
        deploy_spec("legoc: 1\nname: t\ndata: {search: nope.pt}\n"),
        ("nope.pt",),
        id="deploy-task-data-missing",
    ),
    pytest.param(deploy_spec("[" * 3000), ("spec.yaml", "not valid YAML"), id="deploy-task-deep"),
    pytest.param(
        deploy_spec("- a\n- b\n"), ("spec.yaml", "not a legoc task spec"), id="deploy-task-list"
    ),
    pytest.param(
        corrupt_index, ("index.json", "not a legoc catalogue index"), id="catalog-index-corrupt"
    ),
    pytest.param(
        lambda tiny, folder: [
            "card",
            tiny["mlp"]["block"],
            "--format",
            "pdf",
            "-o",
            folder / "out" / "c",
        ],
        ("--format 'pdf'",),
        id="card-format-unknown",
    ),
]


@pytest.mark.parametrize("make_args, needles", OTHER_INPUTS)
def test_other_bad_inputs_of_the_block_commands(tiny, tmp_path, out, make_args, needles):
    argv = make_args(tiny, tmp_path)
    before = sorted(os.listdir(out))
    result = cli(*argv)
    assert_one_error_line(result, needles)
    assert sorted(os.listdir(out)) == before, "an output was written"
