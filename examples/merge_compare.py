"""Merge `legoc compare` reports of the same task run with different seeds into one report.

Used when the seeds of a comparison were run as separate processes (one `--seeds 1` run per
spec seed, side by side) to share a loaded machine's cores. The blocks are copied into one
folder and scored again in onnxruntime, so the merged report's verdicts, curves and intervals
are computed over all seeds exactly as one `legoc compare --seeds N` run would compute them.
Only the held-out `validate` part differs: each run cut its own (seeded by its spec's seed).

    python examples/merge_compare.py --task examples/shapes/task.yaml -o OUT DIR DIR DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from legoc.experiment.report import write_report
from legoc.experiment.result import CompareResult, Run, score_runs, verdicts
from legoc.experiment.sweep import chance_level, layer_shares
from legoc.runtime.block import Block
from legoc.runtime.scores import load_split
from legoc.task.metrics import METRICS
from legoc.task.spec import load_task

FIELDS = ("option", "seed", "path", "status", "seconds", "details", "keep", "variant")
GAP = ("faithfulness_search", "faithfulness_validate", "overfit_gap")


def _from_blocks(folder: Path, task: Path, settings: dict) -> dict:
    """A report.json-like dict from the blocks a run has written so far (its staging folder,
    when it has not finished): what each block's metadata says about itself."""
    runs, seeds = [], set()
    for path in sorted((folder / "runs").glob("*.onnx")):
        block = Block.load(path)
        tag = block.meta_dict("legoc.compare")
        rel = f"runs/{path.name}"
        if tag.get("option") == "full":
            source = block.meta_dict("legoc.rationale").get("params", {}).get("source")
            runs.append({"option": "full", "seed": None, "path": rel, "status": "ok",
                         "seconds": 0.0, "details": {}, "keep": None, "variant": "plain",
                         "params": source or block.rationale_params()})  # fmt: skip
            continue
        details = {k: tag[k] for k in GAP if k in tag}
        rationale = block.meta_dict("legoc.rationale")
        if tag["option"] != "A" and rationale.get("total"):
            kept = {
                m: np.isin(np.arange(n), rationale["kept"][m])
                for m, n in rationale["total"].items()
            }
            details["kept_share"] = layer_shares(kept, rationale["total"])
        if tag["option"] == "A":
            details["target_params"] = block.meta_dict("legoc.baseline").get("target_params")
        seeds.add(tag["seed"])
        runs.append({"option": tag["option"], "seed": tag["seed"], "path": rel, "status": "ok",
                     "seconds": 0.0, "details": details, "keep": tag.get("keep"),
                     "variant": tag.get("variant", "plain")})  # fmt: skip
    full = Block.load(folder / "runs" / "full.onnx")
    metric = full.meta("legoc.metric")
    splits = load_task(task).split_paths()
    chance = {}
    for name, split_path in splits.items():
        split = load_split(name, split_path, [t.name for t in full.inputs], name)
        level = chance_level(metric, split.y)
        if level is not None:
            chance[name] = level
    return {
        "task": full.meta("legoc.task"),
        "metric": metric,
        "higher_is_better": METRICS[metric].higher_is_better,
        "splits": list(splits),
        "seeds": sorted(seeds),
        "seconds": 0.0,
        "settings": settings,
        "runs": runs,
        "sweep": {"chance": chance, "size_axis": "params"},
        "partial": True,
    }


def merge(
    task: Path, folders: list[Path], output: Path, margin: float = 0.0, settings: dict | None = None
) -> CompareResult:
    reports = [
        json.loads((f / "report.json").read_text())
        if (f / "report.json").is_file()
        else _from_blocks(f, task, settings or {})
        for f in folders
    ]
    (output / "runs").mkdir(parents=True)
    runs, seeds, seconds = [], [], 0.0
    for i, (folder, report) in enumerate(zip(folders, reports, strict=True)):
        seeds += report["seeds"]
        seconds = max(seconds, report["seconds"])  # side by side: the longest one
        for entry in report["runs"]:
            if entry["option"] == "full" and i:
                continue  # the same source model in every folder: once
            run = Run(**{k: entry[k] for k in FIELDS})
            if run.option == "full":
                run.params = entry["params"]  # the source's trainable parameters
            if run.path:
                shutil.copy(folder / run.path, output / run.path)
            runs.append(run)
    first = reports[0]
    full = next(r for r in runs if r.option == "full")
    inputs = [t.name for t in Block.load(output / full.path).inputs]
    score_runs(output, inputs, load_task(task).split_paths(), first["metric"], runs)
    settings = {
        **first["settings"],
        "task_spec": str(task),
        "seeds": len(seeds),
        "merged_from": [str(f) for f in folders],
    }
    sweep = first.get("sweep", {})
    result = CompareResult(
        task=first["task"],
        metric=first["metric"],
        higher_is_better=first["higher_is_better"],
        splits=first["splits"],
        seeds=sorted(seeds),
        settings=settings,
        runs=runs,
        verdicts=[],
        output=str(output),
        seconds=seconds,
        levels=settings["keep_levels"],
        variants=sorted({r.variant for r in runs if r.option != "full"}, key=_variant_order),
        chance=sweep.get("chance", {}),
        size_axis=sweep.get("size_axis", "params"),
    )
    result.verdicts = verdicts(result, margin)
    write_report(output, result)
    return result


def _variant_order(name: str) -> tuple[int, str]:
    return (0 if name == "plain" else 2 if name == "guard" else 1, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--task", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument(
        "--settings", type=Path, help="JSON settings for folders without report.json (partial)"
    )
    args = parser.parse_args()
    settings = json.loads(args.settings.read_text()) if args.settings else None
    result = merge(args.task, args.folders, args.output, settings=settings)
    print(f"wrote {result.output}/report.md ({len(result.runs)} runs, seeds {result.seeds})")


if __name__ == "__main__":
    main()
