"""`legoc extract` on good input: the block is written and the summary is one line (or JSON)."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.cli.helpers import extract
from tests.helpers import assert_float_close, write_task

# trainable parameters (`model.parameters()`); the cnn's 24 BatchNorm statistics are buffers
SOURCE_PARAMS = {"mlp": 164, "cnn": 1439, "planted": 99}
SUMMARY = re.compile(
    r"^(?P<out>\S+): kept (?P<kept>(\S+=\d+/\d+ ?)+) \| params (?P<src>[\d,]+) -> "
    r"(?P<blk>[\d,]+) \(\d+\.\d%(; stored [\d,]+ with alignment zeros)?\) \| "
    r"faithfulness search=(?P<search>\d\.\d{3}) iid=\d\.\d{3} \| "
    r"\d+ evaluations, budget \d+/\d+( \(stopped by [^)]*\))? \| "
    r"(?P<minimal>(not )?proven 1-minimal) \| \d+\.\ds$"
)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "planted"])
def test_extract_writes_block_and_one_line_summary(tmp_path, kind):
    task = write_task(tmp_path / "task", kind)
    result, out = extract(task)
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out.parent)) == ["block.onnx"]
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    match = SUMMARY.match(lines[0])
    assert match, lines[0]
    assert match["out"] == str(out)
    assert int(match["src"].replace(",", "")) == SOURCE_PARAMS[kind]
    assert 0 < int(match["blk"].replace(",", "")) < SOURCE_PARAMS[kind]
    assert float(match["search"]) >= 0.9  # the spec's keep (printed rounded to 3 places)


def test_extract_json_summary(mlp_task):
    result, out = extract(mlp_task, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {"units_kept", "params", "faithfulness", "scores", "evaluations", "seconds"} <= set(
        summary
    )
    assert set(summary["units_kept"]) == {"fc1", "fc2", "head"}
    assert re.fullmatch(r"\d+/8", summary["units_kept"]["fc1"])
    assert summary["params"]["source"] == SOURCE_PARAMS["mlp"]
    assert 0 < summary["params"]["block"] < summary["params"]["source"]
    assert summary["faithfulness"] >= 0.9
    assert set(summary["scores"]) == {"search", "iid"}
    for split in summary["scores"].values():
        assert set(split) == {"metric_full", "metric_block", "faithfulness"}
    assert_float_close(summary["scores"]["search"]["faithfulness"], summary["faithfulness"])
    assert 0 < summary["evaluations"] <= 200  # the spec's budget
    assert summary["seconds"] >= 0
    assert summary["output"] == str(out) and out.is_file()
