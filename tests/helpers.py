"""Tiny models and task folders shared by the tests (no weights files, no downloads)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import yaml
from torch import nn


class TinyMLP(nn.Module):
    """Linear -> ReLU -> Linear -> ReLU -> Linear: independent units, no coupling."""

    def __init__(self, n_in: int = 6, hidden: int = 8, n_out: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class TinyResCNN(nn.Module):
    """Conv/BN stem, a residual block (couples conv1 and conv2 channels), pool, flatten, MLP."""

    def __init__(self, channels: int = 6, n_out: int = 5, size: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(channels * (size // 2) ** 2, 10)
        self.fc2 = nn.Linear(10, n_out)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = x + torch.relu(self.bn2(self.conv2(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.fc2(torch.relu(self.fc1(x)))


class PlantedRedundant(nn.Module):
    """Two parallel branches; the `noise` branch's output is multiplied by ~0 downstream, so
    every one of its units is redundant and a search must remove them all."""

    def __init__(self, n_in: int = 4, width: int = 6, n_out: int = 3):
        super().__init__()
        self.signal = nn.Linear(n_in, width)
        self.noise = nn.Linear(n_in, width)
        self.head = nn.Linear(2 * width, n_out)
        with torch.no_grad():
            self.head.weight[:, width:] = 0.0

    def forward(self, x):
        h = torch.cat([torch.relu(self.signal(x)), torch.relu(self.noise(x))], dim=1)
        return self.head(h)


def make_tiny_mlp() -> nn.Module:
    return TinyMLP().eval()


def make_tiny_cnn() -> nn.Module:
    return TinyResCNN().eval()


def make_planted() -> nn.Module:
    return PlantedRedundant().eval()


def make_wide_mlp() -> nn.Module:
    """The tiny MLP with 64 hidden units: still small, but its searches take a few hundred
    evaluations (what interruption tests need to stop one midway)."""
    return TinyMLP(hidden=64).eval()


FACTORIES = {
    "mlp": make_tiny_mlp,
    "cnn": make_tiny_cnn,
    "planted": make_planted,
    "wide": make_wide_mlp,
}
INPUT_SHAPES = {"mlp": (6,), "cnn": (1, 8, 8), "planted": (4,), "wide": (6,)}
N_OUTPUTS = {"mlp": 4, "cnn": 5, "planted": 3, "wide": 4}
ARCH = {
    "mlp": "tests.helpers:make_tiny_mlp",
    "cnn": "tests.helpers:make_tiny_cnn",
    "planted": "tests.helpers:make_planted",
    "wide": "tests.helpers:make_wide_mlp",
}


def synthetic_task(kind: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of a small learnable task matching each model's input shape."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *INPUT_SHAPES[kind]), generator=generator)
    rule = torch.Generator().manual_seed(1234)
    n_out = N_OUTPUTS[kind]
    if kind == "cnn":
        quadrants = x[:, 0].unfold(1, 4, 4).unfold(2, 4, 4).mean(dim=(-1, -2)).reshape(n, 4)
        y = quadrants.argmax(-1)
    else:
        y = (x @ torch.randn(x.shape[1], n_out, generator=rule)).argmax(-1)
    return x, y


@functools.lru_cache(maxsize=None)
def trained_state(kind: str) -> dict[str, torch.Tensor]:
    """Weights of a tiny model trained for a few hundred steps on its synthetic task."""
    torch.manual_seed(0)
    model = FACTORIES[kind]().train()
    x, y = synthetic_task(kind, 512, seed=99)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if kind == "planted":  # keep the noise branch disconnected: it must be redundant
            with torch.no_grad():
                model.head.weight[:, model.signal.out_features :] = 0.0
    return {k: v.detach().clone() for k, v in model.eval().state_dict().items()}


def trained_model(kind: str) -> nn.Module:
    model = FACTORIES[kind]()
    model.load_state_dict(trained_state(kind))
    return model.eval()


def labelled_data(
    kind: str, n: int, seed: int, outputs: list[int] | None = None
) -> dict[str, torch.Tensor]:
    """Task inputs labelled by the trained model (indices into `outputs` when given)."""
    x, _ = synthetic_task(kind, n, seed)
    model = trained_model(kind)  # outside no_grad: a cold cache trains it first
    with torch.no_grad():
        logits = model(x)
    if outputs is not None:
        logits = logits[:, outputs]
    return {"x": x, "y": logits.argmax(-1)}


def write_task(
    folder: Path,
    kind: str = "mlp",
    n: int = 128,
    spec: dict | None = None,
    outputs: list[int] | None = None,
    state_dict: bool = True,
) -> dict[str, Path]:
    """A model file (state dict) plus a task folder: spec.yaml, data/search.pt, data/iid.pt."""
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / "model.pt"
    torch.save(trained_state(kind) if state_dict else trained_model(kind), model_path)
    data = folder / "data"
    data.mkdir(exist_ok=True)
    torch.save(labelled_data(kind, n, 1, outputs), data / "search.pt")
    torch.save(labelled_data(kind, n // 2, 2, outputs), data / "iid.pt")
    body = {
        "legoc": 1,
        "name": f"tiny-{kind}",
        "data": {"search": "data/search.pt", "eval": {"iid": "data/iid.pt"}},
        "metric": "accuracy",
        "keep": 0.9,
        "ablation": "mean",
        "search": {"method": "greedy", "budget": 200, "seed": 0},
    }
    if outputs is not None:
        body["outputs"] = outputs
    body.update(spec or {})
    spec_path = folder / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(body, sort_keys=False))
    return {"model": model_path, "spec": spec_path, "arch": ARCH[kind], "folder": folder}


def assert_one_error_line(result, needles: tuple[str, ...], exit_code: int = 2) -> None:
    """A CLI refusal: the exit code, no traceback, exactly one `error:` line naming `needles`."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), f"unhandled: {result.exception!r}"
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def float_steps(*compared, steps: int = 16, dtype: torch.dtype = torch.float32) -> float:
    """An absolute tolerance of `steps` float steps of `dtype` at the largest magnitude compared.

    Two float32 computations of one quantity that sum in another order (batch sizes, fused
    kernels, AVX-512 vs AVX2 vs scalar dispatch) differ by a few steps *at the values' scale*:
    a fixed atol such as 1e-6 is half a step at 35 and passes on one CPU only."""
    scale = max(float(torch.as_tensor(v, dtype=torch.float64).abs().max()) for v in compared)
    return steps * torch.finfo(dtype).eps * max(scale, 1.0)


def assert_float_close(actual, expected, steps: int = 16) -> None:
    """`actual` equals `expected` within `steps` float32 steps at their magnitude (float_steps)."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    atol = float_steps(actual, expected, steps=steps)
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=0)


def make_search_fall_short(monkeypatch) -> None:
    """Every search ends below the spec's keep (its best faithfulness is keep / 2), so a run
    meets the task-not-met path (exit 1): with keep in (0, 1] the kept-everything rationale
    always reaches it otherwise."""
    from dataclasses import replace

    from legoc import api

    searched = api.search_rationale

    def falls_short(prep, *args, **kwargs):
        found = searched(prep, *args, **kwargs)
        return replace(found, faithfulness=prep.task.spec.keep / 2)

    monkeypatch.setattr(api, "search_rationale", falls_short)
