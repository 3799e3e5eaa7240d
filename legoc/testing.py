"""Tiny models and task folders for tests and benchmarks (no weights files, no downloads).

`write_task(folder, kind)` trains one of the tiny models (cached per process) and writes a
state dict, a spec and its data files, ready for `legoc extract --arch ARCH[kind]`. The
benchmark's deliberately wide MLP (`make_wide`, 32-768-768-10, labelled by a small teacher) lives
here too, so scripts import it from the installed package instead of editing `sys.path`.
Nothing in legoc imports this module (tests/test_layers.py).
"""

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
ARCH = {kind: f"{__name__}:{factory.__name__}" for kind, factory in FACTORIES.items()}


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


@functools.cache
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


# ---------------------------------------------------------------------------------------------
# The search benchmark's "deliberately wide" model: an MLP far wider than its task needs.
# Input (B, 32) float32, logits (B, 10); benchmarks/search.py trains it (seeded, deterministic)
# on a synthetic task labelled by a small random teacher, so a faithful rationale can be much
# smaller than the model. (Not `make_wide_mlp`: that is the tiny MLP with 64 hidden units.)
# ---------------------------------------------------------------------------------------------
WIDE_IN, WIDE_WIDTH, WIDE_OUT = 32, 768, 10
WIDE_TEACHER_HIDDEN = 24


class WideMLP(nn.Module):
    """Linear -> ReLU -> Linear -> ReLU -> Linear, 32 -> 768 -> 768 -> 10."""

    def __init__(self, n_in: int = WIDE_IN, width: int = WIDE_WIDTH, n_out: int = WIDE_OUT):
        super().__init__()
        self.fc1 = nn.Linear(n_in, width)
        self.fc2 = nn.Linear(width, width)
        self.head = nn.Linear(width, n_out)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def make_wide() -> nn.Module:
    return WideMLP().eval()


def wide_teacher(seed: int = 1234):
    """A small random 2-layer network whose argmax defines the labels."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(WIDE_IN, WIDE_TEACHER_HIDDEN, generator=g) / WIDE_IN**0.5
    b1 = 0.5 * torch.randn(WIDE_TEACHER_HIDDEN, generator=g)
    w2 = torch.randn(WIDE_TEACHER_HIDDEN, WIDE_OUT, generator=g) / WIDE_TEACHER_HIDDEN**0.5

    def label(x: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(x @ w1 + b1) @ w2).argmax(-1)

    return label


def wide_sample(
    n: int, seed: int, scale: float = 1.0, noise: float = 0.0
) -> dict[str, torch.Tensor]:
    """Inputs N(0, scale^2) plus optional independent noise; labels from the clean inputs'
    teacher (the true task), so noisy/shifted splits measure robustness."""
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(n, WIDE_IN, generator=g)
    y = wide_teacher()(x)
    if noise:
        x = x + noise * torch.randn(n, WIDE_IN, generator=g)
    return {"x": x.contiguous(), "y": y}


def train_wide(steps: int = 4000, batch: int = 256, seed: int = 0, lr: float = 1e-3) -> nn.Module:
    """Seeded Adam on fresh teacher-labelled batches (deterministic on CPU)."""
    torch.manual_seed(seed)
    model = WideMLP().train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed + 1)
    label = wide_teacher()
    for _ in range(steps):
        x = torch.randn(batch, WIDE_IN, generator=g)
        loss = nn.functional.cross_entropy(model(x), label(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()
