"""Shared by the `legoc` command tests: run `extract` on a task folder, assert a refusal, edit a
task's spec or data in place."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml
from typer.testing import CliRunner

from legoc.cli.app import app
from tests.helpers import assert_one_error_line, trained_model

runner = CliRunner()
TASK_ARCH = object()  # sentinel: pass the task's own --arch


def extract(
    task: dict,
    *extra: str,
    model: Path | None = None,
    spec: Path | None = None,
    arch=TASK_ARCH,
    out: Path | None = None,
):
    """Run `legoc extract` on a task folder; the block goes to its own empty folder."""
    if out is None:
        out = task["folder"].parent / "out" / "block.onnx"
        out.parent.mkdir(exist_ok=True)
    args = [
        "extract",
        str(model or task["model"]),
        "--task",
        str(spec or task["spec"]),
        "-o",
        str(out),
    ]
    if arch is TASK_ARCH:
        arch = task["arch"]
    if arch is not None:
        args += ["--arch", arch]
    return runner.invoke(app, [*args, *extra]), out


def assert_refused(result, exit_code: int, needles: tuple[str, ...], out: Path) -> None:
    """One `error:` line naming the problem, the right exit code, no traceback, nothing written."""
    assert_one_error_line(result, needles, exit_code)
    assert not out.exists()
    if out.parent.is_dir():
        assert sorted(os.listdir(out.parent)) == [], "a temp file or partial block was left"


def edit_spec(task: dict, changes: dict) -> Path:
    """Rewrite the task's spec with dotted-key changes, e.g. {"search.budget": 0}."""
    body = yaml.safe_load(task["spec"].read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = body
        for key in parents:
            node = node[key]
        node[last] = value
    task["spec"].write_text(yaml.safe_dump(body, sort_keys=False))
    return task["spec"]


def edit_data(task: dict, change, split: str = "search") -> None:
    path = task["folder"] / "data" / f"{split}.pt"
    data = torch.load(path, weights_only=True)
    torch.save(change(data), path)


def pickled_module(task):
    """A whole pickled module (a BAD_INPUTS case without --trust-model): extract() kwargs."""
    path = task["folder"] / "whole.pt"
    torch.save(trained_model("mlp"), path)
    return {"model": path, "arch": None}
