"""Option A's networks: one small family per kind of input, each sized by a single width.

A family is picked from the data, not the source model, so A never borrows B's architecture:
flat float features get an MLP, images (N, C, H, W) a small CNN, integer token ids a small
transformer. Every family's parameter count grows with its width, which is what
`match_width` searches to land on a target size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from legoc.errors import LegocError

FAMILIES = ("mlp", "cnn", "transformer")
MAX_WIDTH = 8192


@dataclass(frozen=True)
class InputShapes:
    """What a family needs to know about the data: per input, shape without batch and dtype."""

    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, torch.dtype]
    out_shape: tuple[int, ...]  # the block's output per row, e.g. (3,) for 3 classes
    vocab: int = 0  # token ids are < vocab (transformer only)

    @property
    def names(self) -> list[str]:
        return list(self.shapes)


def choose_family(inputs: InputShapes) -> str:
    """MLP for flat floats, CNN for one image input, transformer for integer token ids."""
    ints = [n for n, d in inputs.dtypes.items() if not d.is_floating_point]
    if ints:
        ids = [n for n in ints if "mask" not in n]
        if len(ids) != 1 or len(inputs.shapes[ids[0]]) != 1:
            raise LegocError(
                f"baseline: integer inputs {ints}: the transformer family takes one (N, L) input "
                "of token ids and optionally an attention mask (a name containing 'mask')"
            )
        return "transformer"
    if len(inputs.shapes) == 1 and len(next(iter(inputs.shapes.values()))) == 3:
        return "cnn"
    return "mlp"


class MLP(nn.Module):
    """Flattened, concatenated inputs -> width -> width -> outputs (ReLU)."""

    def __init__(self, inputs: InputShapes, width: int):
        super().__init__()
        self.names = inputs.names
        n_in = sum(math.prod(s) for s in inputs.shapes.values())
        self.out_shape = inputs.out_shape
        self.net = nn.Sequential(
            nn.Linear(n_in, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, math.prod(inputs.out_shape)),
        )

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        flat = torch.cat([x.flatten(1) for x in xs], dim=1)
        return _shaped(self.net(flat), self.out_shape)


class SmallCNN(nn.Module):
    """Conv-ReLU-MaxPool stages (width, 2*width, 2*width channels) until the image is at most
    8 pixels a side, then one linear layer on the flattened features."""

    def __init__(self, inputs: InputShapes, width: int):
        super().__init__()
        channels, height, wide = next(iter(inputs.shapes.values()))
        stages = max(1, min(3, int(math.log2(max(1, min(height, wide) // 4)))))
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(stages):
            c_out = width if i == 0 else 2 * width
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
            height, wide = height // 2, wide // 2
        self.features = nn.Sequential(*layers)
        self.out_shape = inputs.out_shape
        self.head = nn.Linear(c_in * height * wide, math.prod(inputs.out_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _shaped(self.head(self.features(x).flatten(1)), self.out_shape)


class TinyTransformer(nn.Module):
    """Token + position embeddings, one pre-norm single-head attention block with an MLP, a
    final LayerNorm; per-token outputs when the task has one per token, else a mean over the
    (unmasked) tokens. Written out op by op so it exports to plain ONNX."""

    def __init__(self, inputs: InputShapes, width: int):
        super().__init__()
        self.ids = next(n for n, d in inputs.dtypes.items() if "mask" not in n)
        self.mask = next((n for n in inputs.names if n != self.ids), None)
        length = inputs.shapes[self.ids][0]
        self.per_token = len(inputs.out_shape) == 2 and inputs.out_shape[0] == length
        self.out_shape = inputs.out_shape
        self.names = inputs.names
        self.embed = nn.Embedding(max(inputs.vocab, 1), width)
        self.position = nn.Parameter(torch.randn(length, width) * 0.02)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(width) for _ in range(3))
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, width)
        )
        n_out = inputs.out_shape[-1] if self.per_token else math.prod(inputs.out_shape)
        self.head = nn.Linear(width, n_out)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        named = dict(zip(self.names, xs))
        h = self.embed(named[self.ids]) + self.position
        mask = named[self.mask].to(h.dtype) if self.mask else torch.ones_like(h[..., 0])
        q, k, v = self.qkv(self.norm1(h)).chunk(3, dim=-1)
        scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
        scores = scores + (1.0 - mask[:, None, :]) * -1e4
        h = h + self.proj(torch.softmax(scores, dim=-1) @ v)
        h = self.norm3(h + self.mlp(self.norm2(h)))
        if self.per_token:
            return self.head(h)
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return _shaped(self.head(pooled), self.out_shape)


def _shaped(flat: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
    """(N, prod(out_shape)) -> (N, *out_shape); a no-op for one output axis, so the exported
    output keeps its static size (a reshape would make ONNX infer it as symbolic)."""
    return flat if len(out_shape) == 1 else flat.unflatten(1, out_shape)


BUILDERS: dict[str, Callable[[InputShapes, int], nn.Module]] = {
    "mlp": MLP,
    "cnn": SmallCNN,
    "transformer": TinyTransformer,
}


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_family(family: str | None) -> None:
    """Refuse an unknown family before any work is done."""
    if family is not None and family not in BUILDERS:
        raise LegocError(f"--family {family!r}: use one of {list(FAMILIES)}")


def build(family: str, inputs: InputShapes, width: int) -> nn.Module:
    check_family(family)
    return BUILDERS[family](inputs, width)


def match_width(family: str, inputs: InputShapes, target: int) -> tuple[int, int]:
    """(width, parameter count) of the family's network whose size is closest to `target`
    (parameter counts grow with width, so a bisection finds the crossing)."""
    if target < 1:
        raise LegocError(f"baseline: target size {target} must be at least 1 parameter")

    def size(width: int) -> int:
        with torch.device("meta"):  # counts shapes only: no memory, no init time
            return param_count(build(family, inputs, width))

    low, high = 1, 1
    while size(high) < target and high < MAX_WIDTH:
        low, high = high, min(high * 2, MAX_WIDTH)
    while low < high:
        middle = (low + high) // 2
        if size(middle) < target:
            low = middle + 1
        else:
            high = middle
    candidates = [w for w in (high - 1, high) if w >= 1]
    best = min(candidates, key=lambda w: (abs(size(w) - target), w))
    return best, size(best)
