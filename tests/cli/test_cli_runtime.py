"""The block-side commands (run, compose, deploy, catalog, card) through the CLI: exit codes,
files written, one-line errors, and nothing partial left behind on failure."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from legoc.cli.app import app
from legoc.runtime import Block
from tests.runtime import helpers

runner = CliRunner()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, dict]:
    return helpers.tiny_blocks(tmp_path_factory.getbasetemp() / "tiny-blocks")


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def refused(result, *needles: str, folder: Path | None = None) -> str:
    """Exit 2, one `error:` line naming the problem, no traceback, nothing left in `folder`."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    if folder is not None:
        assert os.listdir(folder) == [], "a partial or temporary file was left"
    return lines[0]


def iid_npz(task: dict, path: Path) -> Path:
    data = torch.load(task["folder"] / "data" / "iid.pt")
    np.savez(path, **{k: v.numpy() for k, v in data.items()})
    return path


# ----------------------------------------------------------------------------- run


def test_run_prints_a_summary_with_accuracy_against_labels(tiny, tmp_path):
    out = ok(cli("run", tiny["mlp"]["block"], iid_npz(tiny["mlp"], tmp_path / "iid.npz")))
    recorded = Block.load(tiny["mlp"]["block"]).meta("legoc.scores")["iid"]["metric_block"]
    assert out.startswith("logits: float32[64,4] min ")
    assert f"accuracy vs y {recorded:.4f}" in out


def test_run_writes_outputs_as_npz_from_a_torch_file(tiny, tmp_path):
    data = tiny["cnn"]["folder"] / "data" / "iid.pt"
    out = ok(cli("run", tiny["cnn"]["block"], data, "-o", tmp_path / "out.npz"))
    assert out.strip() == f"wrote {tmp_path / 'out.npz'}: logits float32[64,5]"
    x = torch.load(data)["x"].numpy()
    with np.load(tmp_path / "out.npz") as saved:
        assert np.array_equal(saved["logits"], Block.load(tiny["cnn"]["block"])(x=x)["logits"])


def test_run_json_summary(tiny, tmp_path):
    npz = tmp_path / "in.npz"
    np.savez(npz, x=helpers.rows((3, 6)))
    body = json.loads(ok(cli("run", tiny["mlp"]["block"], npz, "--json")))
    assert body["outputs"]["logits"]["type"] == "float32[3,4]" and body["output"] is None


def test_run_refuses_bad_inputs_with_one_line(tiny, tmp_path):
    npz = tmp_path / "in.npz"
    np.savez(npz, a=helpers.rows((3, 6)), b=helpers.rows((3, 6)))
    refused(cli("run", tiny["mlp"]["block"], npz), "has no array 'x'", "['a', 'b']")
    np.savez(npz, x=helpers.rows((3, 5)))
    refused(cli("run", tiny["mlp"]["block"], npz), "input 'x' has shape (3, 5)", "float32[batch,6]")
    out = tmp_path / "outs"
    out.mkdir()
    refused(
        cli("run", tiny["mlp"]["block"], npz, "-o", out / "o.txt"), "name it OUT.npz", folder=out
    )
    refused(cli("run", tmp_path / "none.onnx", npz), "file not found")


# ----------------------------------------------------------------------------- compose


def test_compose_sequential_with_a_mapping_writes_a_checked_block(tiny, tmp_path):
    head = helpers.save_linear(tmp_path / "head.onnx", 4, 3, input_name="h")
    out = tmp_path / "out" / "chain.onnx"
    out.parent.mkdir()
    line = ok(
        cli("compose", "sequential", tiny["mlp"]["block"], head, "-o", out, "--map", "logits=h")
    )
    assert line.startswith(f"{out}: sequential mlp -> head | inputs x float32[batch,6]")
    assert "outputs logits float32[batch,3]" in line and "max |composed - parts| 0" in line
    assert Block.load(out).meta("legoc.parts") == ["mlp", "head"]


def test_compose_failures_exit_2_and_write_nothing(tiny, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mlp, cnn = tiny["mlp"]["block"], tiny["cnn"]["block"]
    refused(
        cli("compose", "parallel", mlp, cnn, "-o", out / "p.onnx"),
        "input 'x' is float32[batch,6]",
        "input 'x' is float32[batch,1,8,8]",
        folder=out,
    )
    refused(
        cli("compose", "sequential", mlp, mlp, "-o", out / "s.onnx", "--map", "logits"),
        "expected OUTPUT=INPUT",
        folder=out,
    )
    refused(
        cli("compose", "sequential", mlp, mlp, "-o", out / "s.onnx"),
        "has no source",
        "--map logits=x",
        folder=out,
    )


def test_compose_parallel_concat_checks_against_given_data(tiny, tmp_path):
    out = tmp_path / "pair.onnx"
    data = iid_npz(tiny["mlp"], tmp_path / "iid.npz")
    line = ok(
        cli(
            "compose",
            "parallel",
            tiny["mlp"]["block"],
            tiny["mlp2"]["block"],
            "-o",
            out,
            "--concat",
            "--name",
            "four",
            "--name",
            "two",
            "--check-data",
            data,
        )
    )
    assert "parallel four + two" in line and "outputs logits float32[batch,6]" in line


# ----------------------------------------------------------------------------- deploy


def test_deploy_int8_prints_the_report_table(tiny, tmp_path):
    out = ok(
        cli(
            "deploy",
            tiny["cnn"]["block"],
            "--target",
            "ort-int8",
            "-o",
            tmp_path / "d",
            "--task",
            tiny["cnn"]["spec"],
            "--runs",
            "3",
            "--warmup",
            "1",
        )
    )
    lines = out.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'd'}: cnn.int8.onnx (static int8, calibrated on 128")
    assert lines[1].split() == ["fp32", "block", "ort-int8", "after/before"]
    assert [line.split()[0] for line in lines[2:]] == [
        "file",
        "latency",
        "latency",
        "accuracy",
        "accuracy",
    ]
    assert sorted(os.listdir(tmp_path / "d")) == ["cnn.int8.onnx", "report.json"]


def test_deploy_json_and_bad_target(tiny, tmp_path):
    body = json.loads(
        ok(
            cli(
                "deploy",
                tiny["mlp"]["block"],
                "--target",
                "ort",
                "-o",
                tmp_path / "d",
                "--json",
                "--runs",
                "2",
                "--warmup",
                "0",
            )
        )
    )
    assert body["target"] == "ort" and body["after"]["scores"] == {}
    refused(
        cli("deploy", tiny["mlp"]["block"], "--target", "coreml", "-o", tmp_path / "e"),
        "--target 'coreml': use one of ['ort', 'ort-int8', 'ort-mobile', 'web']",
    )
    assert not (tmp_path / "e").exists()


# ----------------------------------------------------------------------------- catalog


def test_catalog_commands_end_to_end(tiny, tmp_path):
    cat = tmp_path / "cat"
    added = ok(cli("catalog", "add", cat, tiny["mlp"]["block"]))
    assert added.startswith("added mlp  task=tiny-mlp  params=")
    ok(cli("catalog", "add", cat, tiny["cnn"]["block"], "--name", "vision"))
    listed = ok(cli("catalog", "list", cat)).splitlines()
    assert [line.split()[0] for line in listed] == ["mlp", "vision"]
    found = json.loads(ok(cli("catalog", "search", cat, "--task", "tiny-c*", "--json")))
    assert [e["name"] for e in found] == ["vision"]
    source = found[0]["source_sha256"]
    assert "vision" in ok(cli("catalog", "search", cat, "--source", source[:10]))
    assert ok(cli("catalog", "search", cat, "--task", "nothing")).strip() == "no entries match"
    shown = json.loads(ok(cli("catalog", "show", cat, "vision", "--json")))
    assert shown["interface"]["inputs"] == {"x": "float32[batch,1,8,8]"}
    assert shown["metadata"]["legoc.task"] == "tiny-cnn"
    assert ok(cli("catalog", "verify", cat)).strip() == f"{cat}: 2 entries verified (sha256)"


def test_catalog_verify_fails_on_a_tampered_entry(tiny, tmp_path):
    cat = tmp_path / "cat"
    ok(cli("catalog", "add", cat, tiny["mlp"]["block"]))
    blob = cat / "blocks" / "mlp.onnx"
    blob.write_bytes(blob.read_bytes().replace(b"tiny-mlp", b"tiny-MLP"))
    refused(
        cli("catalog", "verify", cat),
        "entry 'mlp'",
        "the file changed after it was added",
        f"legoc catalog add {cat} BLOCK --name mlp --replace",
    )
    refused(cli("catalog", "show", cat, "mlp"), "entry 'mlp'")
    refused(cli("catalog", "search", cat), "pass --task NAME and/or --source SHA256")
    refused(cli("catalog", "list", tmp_path / "none"), "folder not found")


# ----------------------------------------------------------------------------- card


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_card_writes_the_card_and_its_picture(tiny, tmp_path, fmt):
    out = tmp_path / f"card.{fmt}"
    line = ok(cli("card", tiny["cnn"]["block"], "-o", out, "--format", fmt))
    assert line.strip() == f"wrote {out} and {tmp_path / 'card.units.png'}"
    assert "tiny-cnn" in out.read_text()


def test_card_refuses_a_missing_output_folder(tiny, tmp_path):
    refused(
        cli("card", tiny["cnn"]["block"], "-o", tmp_path / "no" / "card.md"),
        "does not exist; create it first",
    )
