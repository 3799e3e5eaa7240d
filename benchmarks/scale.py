"""Real sizes: random-init BERT-base, GPT-2 small and GPT-2 medium through an `auto` search.

    python benchmarks/scale.py [--models gpt2,bert-base,gpt2-medium] [--budget 200]
                               [--rows 128] [--tokens 32] [--threads 2] [--device auto]

Each model is built from its standard transformers config (no download, random weights) with a
4-way classification head on its last position; the task is teacher-defined: the labels are the
full model's own predictions, so the full model scores 1.0 and the emptied model (every unit
mean-ablated: one constant prediction) fails. Prints per model: one forward over the search data,
the set-up time (start to the first candidate evaluation), evaluations/s against forwards/s, the
search's phase times, total time, peak RSS, and the heads and neurons kept. Targets (issue 17) on
2 CPU cores: GPT-2 small and BERT-base through a 200-evaluation search in under 15 minutes and
8 GiB; GPT-2 medium within 24 GiB. Each model runs in its own process (peak RSS per model).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch import nn

CLASSES = 4
MODELS = {  # name -> (config class, standard config)
    "bert-base": ("BertConfig", {}),
    "gpt2": ("GPT2Config", {}),
    "gpt2-medium": ("GPT2Config", {"n_embd": 1024, "n_layer": 24, "n_head": 16}),
}
HEAD_DIM = 64  # all three models
LAYER = re.compile(r"\.(\d+)\.(attention\.self\.query|attn\.c_attn|intermediate\.dense|mlp\.c_fc)$")


class LastTokenClassifier(nn.Module):
    """A transformers backbone and a linear head on the last position's hidden state."""

    def __init__(self, kind: str):
        super().__init__()
        import transformers

        config_class, overrides = MODELS[kind]
        config = getattr(transformers, config_class)(**overrides)
        if config_class == "BertConfig":
            self.backbone = transformers.BertModel(config, add_pooling_layer=False)
        else:
            self.backbone = transformers.GPT2Model(config)
        self.head = nn.Linear(config.hidden_size, CLASSES)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids).last_hidden_state
        return self.head(hidden[:, -1])


def make_bert_base() -> nn.Module:
    return LastTokenClassifier("bert-base")


def make_gpt2() -> nn.Module:
    return LastTokenClassifier("gpt2")


def make_gpt2_medium() -> nn.Module:
    return LastTokenClassifier("gpt2-medium")


FACTORIES = {"bert-base": "make_bert_base", "gpt2": "make_gpt2", "gpt2-medium": "make_gpt2_medium"}


def write_task(folder: Path, kind: str, rows: int, tokens: int, budget: int) -> tuple[Path, Path]:
    """The model's state dict and a teacher-labelled task spec in `folder`."""
    torch.manual_seed(0)
    model = LastTokenClassifier(kind).eval()
    vocab = model.backbone.config.vocab_size
    ids = torch.randint(vocab, (rows, tokens), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = torch.cat([model(ids[i : i + 16]).argmax(-1) for i in range(0, rows, 16)])
    torch.save(model.state_dict(), folder / "model.pt")
    torch.save({"input_ids": ids, "y": labels}, folder / "search.pt")
    spec = {
        "legoc": 1,
        "name": f"{kind}-teacher",
        "data": {"search": "search.pt"},
        "metric": "accuracy",
        "keep": 0.9,
        "search": {"method": "auto", "budget": budget, "seed": 0},
    }
    (folder / "task.yaml").write_text(yaml.safe_dump(spec))
    return folder / "model.pt", folder / "task.yaml"


def forward_seconds(kind: str, folder: Path) -> float:
    """One forward of the model over the whole search split, in batches of 32 rows."""
    model = LastTokenClassifier(kind).eval()
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    ids = torch.load(folder / "search.pt", weights_only=True)["input_ids"]
    started = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(ids), 32):
            model(ids[i : i + 32])
    return time.perf_counter() - started


def kept_counts(kept: dict[str, list[int]], total: dict[str, int]) -> dict[str, str]:
    heads = neurons = heads_total = neurons_total = 0
    for name, units in kept.items():
        match = LAYER.search(name)
        if match is None:
            continue
        if match.group(2) in ("attention.self.query", "attn.c_attn"):
            heads += len(units) // HEAD_DIM
            heads_total += total[name] // HEAD_DIM
        else:
            neurons += len(units)
            neurons_total += total[name]
    return {"heads": f"{heads}/{heads_total}", "neurons": f"{neurons}/{neurons_total}"}


def run_one(kind: str, args: argparse.Namespace) -> dict:
    """Build, capture, search and export one model; timings by phase (progress callbacks)."""
    from legoc import api

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model, task = write_task(Path(tmp), kind, args.rows, args.tokens, args.budget)
        arch = f"{Path(__file__).resolve()}:{FACTORIES[kind]}"
        phases: dict[str, float] = {}
        started, cpu_started = time.perf_counter(), time.process_time()
        first: list[float] = []

        def progress(phase: str, done: int, total: int) -> None:
            now = time.perf_counter() - started
            if phase + " start" not in phases or done >= total:
                cpu = time.process_time() - cpu_started
                print(
                    f"# {kind} {now:7.1f} s wall {cpu:7.1f} s cpu: {phase} {done}/{total}",
                    file=sys.stderr,
                    flush=True,
                )
            phases.setdefault(phase + " start", now)
            phases[phase + " end"] = now
            if phase in ("search", "mask training") and not first:
                first.append(now)

        result = api.extract(
            model,
            task,
            Path(tmp) / "block.onnx",
            arch=arch,
            progress=progress,
            budget=args.budget,
            device=args.device,
        )
        total = time.perf_counter() - started
        forward = forward_seconds(kind, Path(tmp))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    names = sorted({key.rsplit(" ", 1)[0] for key in phases})
    spans = {n: round(phases[n + " end"] - phases[n + " start"], 1) for n in names}
    evals = result.evaluations
    search_s = total - (first[0] if first else total)
    return {
        "model": kind,
        "cpu_s": round(time.process_time() - cpu_started, 1),
        "params": result.params_source,
        "forward_s": round(forward, 1),
        "setup_s": round(first[0], 1) if first else None,
        "setup_forwards": round(first[0] / forward, 2) if first else None,
        "evaluations": evals,
        "evaluations_per_s": round(evals / max(search_s, 1e-9), 3),
        "forwards_per_s": round(1 / forward, 3),
        "phases_s": spans,
        "total_s": round(total, 1),
        "peak_rss_gib": round(rss, 2),
        "faithfulness": round(result.faithfulness, 4),
        "params_block": result.params_block,
        **kept_counts(result.kept, result.total),
    }


def _child(kind: str, args: argparse.Namespace, queue) -> None:
    if args.profile is None:
        try:
            queue.put(run_one(kind, args))
        except Exception as exc:  # a failed phase is a row too (the traceback went to stderr)
            import traceback

            traceback.print_exc()
            queue.put({"model": kind, "error": f"{type(exc).__name__}: {exc}"[:500]})
        return
    import cProfile

    profile = cProfile.Profile()
    row = profile.runcall(run_one, kind, args)
    profile.dump_stats(f"{args.profile}.{kind}")  # read with python -m pstats FILE.MODEL
    queue.put(row)


def _result(child, queue) -> dict:
    """The child's row; a child that died (crash, killed for memory) gives a row that says so,
    instead of a parent waiting forever on the queue."""
    import queue as queues

    while True:
        try:
            row = queue.get(timeout=5)
            child.join()
            return row
        except queues.Empty:
            if not child.is_alive():
                return {"error": f"the benchmark process exited with code {child.exitcode}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gpt2,bert-base,gpt2-medium")
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--profile", default=None, help="cProfile each model to FILE.MODEL")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    for kind in args.models.split(","):
        if kind not in MODELS:
            raise SystemExit(f"--models: unknown model {kind!r}; use {sorted(MODELS)}")
        queue = context.Queue()
        child = context.Process(target=_child, args=(kind, args, queue))
        child.start()
        row = _result(child, queue)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
