"""Memory benchmark: peak RSS of `legoc extract` as the `search` split grows 1x, 4x, 16x.

Each size runs in a fresh Python process (so one run's peak cannot hide another's), which
prints its own peak resident set size when the extraction is done (VmHWM on Linux, else
`ru_maxrss`; see `peak_rss_mb`). Data is generated in yet another process. The target
(DESIGN §4, issue 7) is a flat line: the data is scored in batches, so peak memory should not
follow the size of the data file.

    python benchmarks/memory.py                      # 1x = 100,000 rows (25 MB) .. 16x (403 MB)
    python benchmarks/memory.py --base-rows 20000    # a quicker look
    python benchmarks/memory.py --format npz         # the same data as .npz

The model is an MLP 64 -> 32 -> 32 -> 4 with seeded random weights; rows are N(0, I) inputs
labelled by the model itself (the full model scores accuracy 1). Search: greedy, keep 0.9,
a small budget: the point is the memory of scoring, not the search.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
N_IN, HIDDEN, N_OUT = 64, 32, 4
CHUNK = 100_000  # rows generated at a time


def make_model() -> nn.Module:
    """The benchmark's MLP (also the --arch factory of the child runs)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(N_IN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, N_OUT),
    ).eval()


def write_data(path: Path, rows: int, fmt: str) -> None:
    """`rows` seeded inputs and the model's own labels, as .pt (torch.save) or .npz."""
    model = make_model()
    generator = torch.Generator().manual_seed(rows)
    x = torch.empty(rows, N_IN)
    y = torch.empty(rows, dtype=torch.long)
    with torch.no_grad():
        for start in range(0, rows, CHUNK):
            stop = min(start + CHUNK, rows)
            x[start:stop] = torch.randn(stop - start, N_IN, generator=generator)
            y[start:stop] = model(x[start:stop]).argmax(-1)
    if fmt == "pt":
        torch.save({"x": x, "y": y}, path)
    else:
        np.savez(path, x=x.numpy(), y=y.numpy())


def write_task(folder: Path, rows: int, fmt: str, method: str, budget: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"search.{fmt}"
    if not data.exists():  # in its own process: this one stays small for the children it forks
        argv = [sys.executable, __file__, "--write-data", str(data), str(rows), fmt]
        subprocess.run(argv, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    spec = {
        "legoc": 1,
        "name": f"memory-{rows}",
        "data": {"search": data.name},
        "metric": "accuracy",
        "keep": 0.9,
        "search": {"method": method, "budget": budget, "seed": 0},
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder / "spec.yaml"


def child(model: str, spec: str, out: str) -> None:
    """Run one extraction (with spec '-', only the imports) and print peak RSS as JSON."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    evaluations = 0
    import legoc
    from legoc import api

    assert Path(legoc.__file__).resolve().is_relative_to(ROOT), legoc.__file__
    if spec != "-":
        result = api.extract(model, spec, out, arch=f"{Path(__file__).resolve()}:make_model")
        evaluations = result.evaluations
    seconds = time.perf_counter() - started
    print(json.dumps({"peak_mb": peak_rss_mb(), "seconds": seconds, "evaluations": evaluations}))


def peak_rss_mb() -> float:
    """This process's peak resident set size. On Linux VmHWM: ru_maxrss also counts the
    parent's memory image copied by fork before exec (Linux keeps the larger of the two), so
    a parent holding the data it just wrote would inflate it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here


def measure(model: Path, spec: Path | str, out: Path) -> dict:
    # the checkout's legoc is the one measured, whatever is installed
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    argv = [sys.executable, __file__, "--child", str(model), str(spec), str(out)]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"child failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-rows", type=int, default=100_000, help="rows at 1x")
    parser.add_argument("--sizes", default="1,4,16", help="multiples of --base-rows")
    parser.add_argument("--format", choices=("pt", "npz"), default="pt")
    parser.add_argument("--method", default="greedy")
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the generated data here")
    parser.add_argument(
        "--child", nargs=3, metavar=("MODEL", "SPEC", "OUT"), help=argparse.SUPPRESS
    )
    parser.add_argument("--write-data", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.write_data:
        path, rows, fmt = args.write_data
        torch.set_num_threads(1)
        write_data(Path(path), int(rows), fmt)
        return
    torch.set_num_threads(1)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="legoc-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "model.pt"
    torch.save(make_model().state_dict(), model)
    floor = measure(model, "-", work / "none.onnx")
    print(f"imports only (python, torch, legoc.api): {floor['peak_mb']:.0f} MB peak RSS")
    print(
        f"{'size':>5} {'rows':>10} {'data MB':>8} {'peak RSS MB':>12} {'vs 1x':>6} "
        f"{'above imports MB':>17} {'seconds':>8} {'evals':>6}"
    )
    first = None
    for size in (int(s) for s in args.sizes.split(",")):
        rows = args.base_rows * size
        spec = write_task(work / f"{size}x", rows, args.format, args.method, args.budget)
        data_mb = (spec.parent / f"search.{args.format}").stat().st_size / 2**20
        got = measure(model, spec, spec.parent / "block.onnx")
        first = first or got["peak_mb"]
        print(
            f"{size:>4}x {rows:>10,} {data_mb:>8.1f} {got['peak_mb']:>12.1f} "
            f"{got['peak_mb'] / first:>6.2f} {got['peak_mb'] - floor['peak_mb']:>17.1f} "
            f"{got['seconds']:>8.1f} {got['evaluations']:>6}",
            flush=True,
        )
    if args.workdir is None:
        print(f"(data in {work}; pass --workdir to keep and reuse it)")


if __name__ == "__main__":
    main()
