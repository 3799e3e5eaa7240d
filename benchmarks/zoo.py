"""The torchvision classification zoo through legoc: units, what froze, and what a search keeps.

Each model is built with random weights (seeded; BatchNorm statistics taken on the search
rows; where one label would still cover most rows, zero weights woken and biases dropped:
`wake_flat_logits`), written as a state dict with an `--arch`
factory of this file, and given a teacher-defined task it cannot meet emptied: the labels are
the full model's argmax over a few of its classes, chosen so that the labels are as balanced as
the model's outputs allow (a constant, emptied model gets one class right). Then, as
`legoc extract` does: prepare (capture + analysis + reference scores, timed), search with a
small budget, build the block. Prints per model: units, frozen share with the top reasons, kept
units, params and MACs ratios, prepare and total seconds.

torchvision imports only beside its own torch (see benchmarks/README.md, "zoo.py").

    python benchmarks/zoo.py --models resnet18,mobilenet_v2 --budget 60
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import yaml

MODELS = {  # name -> (input side, builder kwargs)
    "resnet18": (64, {}),
    "resnext50_32x4d": (64, {}),
    "wide_resnet50_2": (64, {}),
    "vgg11": (64, {}),
    "alexnet": (64, {}),
    "squeezenet1_0": (64, {}),
    "densenet121": (64, {}),
    "googlenet": (64, {"aux_logits": False, "init_weights": False}),  # its init: flat logits
    "inception_v3": (75, {"aux_logits": False, "init_weights": False}),  # 75: its minimum
    "mobilenet_v2": (64, {}),
    "mobilenet_v3_small": (64, {}),
    "mnasnet0_5": (64, {}),
    "shufflenet_v2_x0_5": (64, {}),
    "efficientnet_b0": (64, {}),
    "regnet_x_400mf": (64, {}),
    "regnet_y_400mf": (64, {}),
    "convnext_tiny": (64, {}),
    "vit_b_16": (64, {"image_size": 64}),
    "swin_t": (64, {}),
    "maxvit_t": (224, {}),  # its partitions need the full size
}
SUBSET = (
    "resnet18,mobilenet_v2,mobilenet_v3_small,efficientnet_b0,shufflenet_v2_x0_5,"
    "regnet_y_400mf,googlenet,densenet121"
)
CLASSES = 4  # the task reads this many of the model's 1000 outputs


def build(name: str) -> torch.nn.Module:
    """A random-init torchvision model (the `--arch` factory: seeded, so the same weights)."""
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None, **MODELS[name][1]).eval()


for _name in MODELS:  # one `make_<name>` factory per model, for `--arch zoo.py:make_<name>`
    globals()[f"make_{_name}"] = functools.partial(build, _name)


def balanced_classes(logits: torch.Tensor, k: int) -> list[int]:
    """Greedily pick `k` classes whose argmax labels over the rows have the most entropy."""

    def entropy(classes: list[int]) -> float:
        counts = torch.bincount(logits[:, classes].argmax(1), minlength=len(classes)).double()
        p = counts[counts > 0] / counts.sum()
        return float(-(p * p.log()).sum())

    chosen = [int(logits.var(0).argmax())]
    while len(chosen) < k:
        rest = [c for c in range(logits.shape[1]) if c not in chosen]
        chosen.append(max(rest, key=lambda c: (entropy([*chosen, c]), -c)))
    return sorted(chosen)


def calibrate_norms(model: torch.nn.Module, x: torch.Tensor) -> None:
    """BatchNorm statistics of the data, as a trained model has: at random init (mean 0, var 1)
    some models' logits hardly depend on the input, and every row gets one label."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration passes
    model.train()
    model(x)
    model.eval()


def wake_flat_logits(model: torch.nn.Module) -> None:
    """Some random-init models answer every row alike: ViT's head starts at zero, and AlexNet
    (no norms) carries its biases through eight layers while the input's part shrinks. Give
    zero weights a random start and drop the Linear/Conv biases, so the logits depend on the
    input (applied only where the majority label covers more than half of the rows)."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            if not m.weight.any():
                fan_in = m.weight[0].numel()
                torch.nn.init.normal_(m.weight, std=fan_in**-0.5)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)


def majority_share(y: torch.Tensor) -> float:
    return float(torch.bincount(y).max()) / len(y)


def write_case(
    name: str, folder: Path, rows: int, budget: int, keep: float
) -> tuple[Path, Path, float]:
    side = MODELS[name][0]
    model = build(name)
    x = torch.randn(rows, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        calibrate_norms(model, x)
        logits = model(x)
        classes = balanced_classes(logits, CLASSES)
        if majority_share(logits[:, classes].argmax(1)) > 0.5:
            wake_flat_logits(model)
            calibrate_norms(model, x)
            logits = model(x)
            classes = balanced_classes(logits, CLASSES)
    y = logits[:, classes].argmax(1)
    torch.save(model.state_dict(), folder / "model.pt")
    torch.save({"x": x, "y": y}, folder / "search.pt")
    spec = {
        "legoc": 1,
        "name": f"zoo-{name}",
        "data": {"search": "search.pt"},
        "outputs": classes,
        "metric": "accuracy",
        "keep": keep,
        "ablation": "mean",
        "search": {"method": "auto", "budget": budget, "seed": 0},
    }
    (folder / "task.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    majority = majority_share(y)
    return folder / "model.pt", folder / "task.yaml", majority


def frozen_summary(ir) -> tuple[int, float, list[tuple[str, int]]]:
    """Units, the share of them in frozen groups, and the reasons by units frozen."""
    units = sum(len(g.members) for g in ir.groups)
    reasons = collections.Counter()
    for g in ir.groups:
        if g.frozen:
            reasons[g.frozen] += len(g.members)
    return units, sum(reasons.values()) / max(units, 1), reasons.most_common(3)


def run_model(name: str, args) -> dict:
    from legoc import api

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, task, majority = write_case(name, folder, args.rows, args.budget, args.keep)
        t0 = time.perf_counter()
        prep = api.prepare(model, task, f"{__file__}:make_{name}")
        prepare_s = time.perf_counter() - t0
        units, frozen, reasons = frozen_summary(prep.ir)
        row = {
            "model": name,
            "units": units,
            "frozen": frozen,
            "reasons": reasons,
            "majority": majority,
            "prepare_s": prepare_s,
        }
        if args.prepare_only:  # units and what froze: no search, no block
            row["total_s"] = time.perf_counter() - started
            return row
        found = api.search_rationale(prep, "auto", args.budget, seed=0)
        kept = sum(int(k.sum()) for k in found.ir.kept.values())
        row |= {
            "kept": kept / max(sum(s.size for s in prep.ir.spaces.values()), 1),
            "faithfulness": found.faithfulness,
            "evaluations": found.evaluations,
            "params": prep.ir.sliced_param_count(found.ir.kept) / prep.ir.param_count(),
            "macs": prep.ir.sliced_macs(found.ir.kept) / max(prep.ir.macs_per_row(), 1),
        }
        if found.faithfulness >= args.keep:
            built = api.build_block(prep, found, "auto", 0)
            row["params"] = built.result.params_block / built.result.params_source
    row["total_s"] = time.perf_counter() - started
    return row


def print_row(row: dict) -> None:
    if "error" in row:
        print(f"{row['model']:<20} ERROR {row['error']}", flush=True)
        return
    reasons = "; ".join(f"{n} {r}" for r, n in row["reasons"]) or "-"
    print(
        f"{row['model']:<20} units {row['units']:>6}  frozen {row['frozen']:6.1%}  "
        f"kept {row.get('kept', math.nan):6.1%}  params {row.get('params', math.nan):6.3f}  "
        f"MACs {row.get('macs', math.nan):6.3f}  faith {row.get('faithfulness', math.nan):.3f} "
        f"(majority {row['majority']:.2f})  prepare {row['prepare_s']:6.1f} s  "
        f"total {row['total_s']:6.1f} s\n{'':<20} frozen by: {reasons}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=SUBSET, help="comma-separated, or 'all'")
    parser.add_argument("--budget", type=int, default=60, help="candidate evaluations")
    parser.add_argument("--rows", type=int, default=64, help="search rows")
    parser.add_argument("--keep", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    parser.add_argument(
        "--prepare-only", action="store_true", help="units and frozen only: no search, no block"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = list(MODELS) if args.models == "all" else args.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {sorted(MODELS)}")
    rows = []
    for name in names:
        started = time.perf_counter()
        try:
            row = run_model(name, args)
        except Exception as exc:  # one model's failure is a row of the table, not the end
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            row = {"model": name, "error": line[:300], "total_s": time.perf_counter() - started}
            traceback.print_exc(file=sys.stderr)
        print_row(row)
        rows.append(row)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
