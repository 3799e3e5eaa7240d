"""Small graph operations legoc inserts into IR graphs; each traces cleanly into ONNX."""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn


@torch.fx.wrap
def select_outputs(x: torch.Tensor, indices: tuple[int, ...]) -> torch.Tensor:
    """The task's outputs, in the spec's order, from the model's last dim."""
    return x[..., list(indices)]


@torch.fx.wrap
def broadcast_constant(reference: torch.Tensor, value: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """A constant with the batch size of `reference` (on `axis` of the constant): what a layer
    becomes when all its inputs were removed and only their folded ablation constant is left."""
    shape = list(value.shape)
    shape[axis] = reference.shape[0]
    return value.expand(*shape)


class Ablate(nn.Module):
    """Replaces removed units of one producer by their ablation value.

    Inserted only into the scoring copy of a graph. It can also accumulate per-unit means
    (to compute ablation values) and first-order attributions (to rank units).
    """

    def __init__(self, size: int, axis: int, ndim: int):
        super().__init__()
        shape = [size] + [1] * (ndim - 1 - axis)
        self.axis, self.ndim = axis, ndim
        self.register_buffer("keep", torch.ones(shape, dtype=torch.bool))
        self.register_buffer("value", torch.zeros(shape))
        self.mean_sum: torch.Tensor | None = None
        self.mean_count = 0
        self.attribution: torch.Tensor | None = None
        self.token_mask: torch.Tensor | None = None  # (batch, positions) real tokens, if any
        self.gate: torch.Tensor | None = None  # soft 0..1 keep per unit (learned masks)
        self.all_kept = True  # nothing to replace: pass the activation through untouched
        # hand 4-d activations on in channels-last layout: pooling and convolutions run several
        # times faster in it on CPU, and a conv over a 1-channel input cannot choose it itself
        self.channels_last = False

    def set(self, keep: torch.Tensor, value: torch.Tensor | None = None) -> None:
        self.keep.copy_(keep.reshape(self.keep.shape))
        self.all_kept = bool(self.keep.all())
        if value is not None:
            self.value.copy_(value.reshape(self.value.shape).to(self.value.dtype))

    def start_means(self) -> None:
        self.mean_sum, self.mean_count = torch.zeros(self.keep.shape[0], dtype=torch.float64), 0

    def start_attribution(self) -> None:
        self.attribution = torch.zeros(self.keep.shape[0], dtype=torch.float64)

    def stop(self) -> None:
        self.mean_sum, self.attribution = None, None

    def _unit_last(self, t: torch.Tensor) -> torch.Tensor:
        """View as (batch, other positions..., units) so reductions are uniform."""
        return t.movedim(self.axis, -1).reshape(t.shape[0], -1, t.shape[self.axis])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.mean_sum is not None:
            flat = self._unit_last(x.detach()).double()
            mask = self.token_mask
            if mask is not None and x.dim() == 3 and self.axis == 2 and x.shape[:2] == mask.shape:
                weights = mask.to(flat.dtype).unsqueeze(-1)  # padding never enters a mean
                self.mean_sum += (flat * weights).sum(dim=(0, 1))
                self.mean_count += float(weights.sum())
            else:
                self.mean_sum += flat.sum(dim=(0, 1))
                self.mean_count += flat.shape[0] * flat.shape[1]
        if self.attribution is not None and x.requires_grad:
            value = self.value.reshape(-1)
            detached = self._unit_last(x.detach())

            def accumulate(grad: torch.Tensor) -> None:
                per_item = ((value - detached) * self._unit_last(grad)).sum(dim=1)
                self.attribution += per_item.abs().sum(dim=0).double()

            x.register_hook(accumulate)
        if self.gate is not None:
            return self.value + self.gate.reshape(self.keep.shape) * (x - self.value)
        if self.all_kept:
            return x
        return torch.where(self.keep, x, self.value)


@torch.fx.wrap
def constant_channel_conv(
    reference: torch.Tensor, kernel: torch.Tensor, stride, padding, dilation
) -> torch.Tensor:
    """What a zero-padded conv receives from input channels that were replaced by constants.

    Those channels contribute the same conv applied to a channel of ones with the kernel
    sum_c weight[:, c] * value_c: uniform inside, smaller at the borders. Computing it from the
    ones costs C_out*k*k parameters instead of a stored C_out*H*W map.
    """
    ones = torch.ones_like(reference[:, :1])
    conv = F.conv2d if reference.dim() == 4 else F.conv1d
    return conv(ones, kernel, None, stride, padding, dilation)


@torch.fx.wrap
def held_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    keep: torch.Tensor,
    const: torch.Tensor,
    eps: float | None,
    rms: bool,
) -> torch.Tensor:
    """A layer (or RMS) norm over the last dim whose removed channels (`keep` 0) read their
    ablation constant `const` whatever `x` holds there: what fold-ablations makes of a norm
    over units, so its statistics are the masked model's while the removed wires are cut."""
    x = torch.where(keep.bool(), x, const)
    shape = (x.shape[-1],)
    if rms:
        return F.rms_norm(x, shape, weight, eps)
    return F.layer_norm(x, shape, weight, bias, eps)


@torch.fx.wrap
def carried_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    sums: torch.Tensor,
    basis: torch.Tensor,
    removed: int,
    eps: float | None,
    rms: bool,
    direct: torch.Tensor | None = None,
) -> torch.Tensor:
    """A layer (or RMS) norm over the kept channels of the last dim, with the removed ones'
    constants folded into the statistics (`sums[..., 0]` = their sum, `sums[..., 1]` = their
    sum of squares, `removed` = how many), followed by the *carriers* that let each reader
    recompute what the removed channels would have given it: `rstd * basis` (the constants,
    factored over positions), `-mean * rstd` (layer norm only) and ones (for the norm's bias).
    Each reader holds one column per carrier, so the block stays exact with the removed
    channels gone. Where the constants vary too much over positions for that to be smaller,
    `direct` holds the removed channels' scale and shift and `basis` their constants: the
    carriers are then the removed channels' outputs themselves."""
    n = x.shape[-1] + removed
    s1, s2 = sums[..., :1], sums[..., 1:2]
    if rms:
        mean = torch.zeros_like(x[..., :1])
        var = ((x * x).sum(-1, keepdim=True) + s2) / n
    else:
        mean = (x.sum(-1, keepdim=True) + s1) / n
        centred = x - mean
        var = ((centred * centred).sum(-1, keepdim=True) + s2 - 2 * mean * s1) / n
        var = var + removed * mean * mean / n
    rstd = torch.rsqrt(var + (torch.finfo(x.dtype).eps if eps is None else eps))
    y = (x - mean) * rstd
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    if direct is not None:
        carriers = [(basis - mean) * rstd * direct[0] + direct[1]]
    else:
        carriers = [rstd * basis] if basis.shape[-1] else []
        if not rms:
            carriers.append(-mean * rstd)
        carriers.append(torch.ones_like(rstd))
    return torch.cat([y, *(c.expand(*y.shape[:-1], c.shape[-1]) for c in carriers)], dim=-1)
