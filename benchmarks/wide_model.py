"""The benchmark's "deliberately wide" model: an MLP far wider than its task needs.

Referenced by legoc as ``benchmarks/wide_model.py:make_wide``. Input (B, 32) float32;
output logits (B, 10). `benchmarks/search.py` trains it (seeded, deterministic) on a synthetic
task labelled by a small random teacher network, so a faithful rationale can be much smaller
than the model.
"""

from __future__ import annotations

import torch
from torch import nn

N_IN, WIDTH, N_OUT = 32, 768, 10
TEACHER_HIDDEN = 24


class WideMLP(nn.Module):
    def __init__(self, n_in: int = N_IN, width: int = WIDTH, n_out: int = N_OUT):
        super().__init__()
        self.fc1 = nn.Linear(n_in, width)
        self.fc2 = nn.Linear(width, width)
        self.head = nn.Linear(width, n_out)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def make_wide() -> nn.Module:
    return WideMLP().eval()


def teacher(seed: int = 1234):
    """A small random 2-layer network whose argmax defines the labels."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(N_IN, TEACHER_HIDDEN, generator=g) / N_IN**0.5
    b1 = 0.5 * torch.randn(TEACHER_HIDDEN, generator=g)
    w2 = torch.randn(TEACHER_HIDDEN, N_OUT, generator=g) / TEACHER_HIDDEN**0.5

    def label(x: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(x @ w1 + b1) @ w2).argmax(-1)

    return label


def sample(n: int, seed: int, scale: float = 1.0, noise: float = 0.0) -> dict[str, torch.Tensor]:
    """Inputs N(0, scale^2) plus optional independent noise; labels from the clean inputs'
    teacher (the true task), so noisy/shifted splits measure robustness."""
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(n, N_IN, generator=g)
    y = teacher()(x)
    if noise:
        x = x + noise * torch.randn(n, N_IN, generator=g)
    return {"x": x.contiguous(), "y": y}


def train(steps: int = 4000, batch: int = 256, seed: int = 0, lr: float = 1e-3) -> nn.Module:
    """Seeded Adam on fresh teacher-labelled batches (deterministic on CPU)."""
    torch.manual_seed(seed)
    model = WideMLP().train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed + 1)
    label = teacher()
    for _ in range(steps):
        x = torch.randn(batch, N_IN, generator=g)
        loss = nn.functional.cross_entropy(model(x), label(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()
