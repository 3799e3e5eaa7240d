"""Small graph operations legoc inserts into IR graphs; each traces cleanly into ONNX."""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from legoc.ir.tokens import positional


@torch.fx.wrap
def select_outputs(x: torch.Tensor, indices: tuple[int, ...]) -> torch.Tensor:
    """The task's outputs, in the spec's order, from the model's last dim."""
    return x[..., list(indices)]


@torch.fx.wrap
def broadcast_constant(
    reference: torch.Tensor,
    value: torch.Tensor,
    axis: int = 0,
    token_axis: int | None = None,
    per_item: int = 1,
) -> torch.Tensor:
    """A constant with the batch size of `reference` (on `axis` of the constant): what a layer
    becomes when all its inputs were removed and only their folded ablation constant is left.
    With `token_axis`, `reference` is a (batch, tokens) input and the constant's positions
    follow its token count (`legoc.ir.tokens.positional`). `per_item`: rows per input item on
    `axis` (Swin's windows folded into the batch axis). A fresh tensor, not a view: an
    in-place op after it (AlexNet's `ReLU(inplace=True)`) must neither fail on the expanded
    batch nor write into the stored constant."""
    shape = list(value.shape)
    shape[axis] = reference.shape[0] * per_item
    if token_axis is not None:
        value = positional(value, token_axis, reference.shape[1])
        shape[token_axis] = reference.shape[1]
    return value.expand(*shape).clone()


@torch.fx.wrap
def token_constant(reference: torch.Tensor, table: torch.Tensor, axis: int) -> torch.Tensor:
    """A folded constant that varies over positions, cut to `reference`'s token count on
    `axis` (`table`: the search data's positions, then the tail for positions past them).
    A fresh tensor, as `broadcast_constant`'s."""
    return positional(table, axis, reference.shape[axis]).clone()


@torch.fx.wrap
def gather_heads(x: torch.Tensor, axis: int, index: torch.Tensor) -> torch.Tensor:
    """The KV head each kept query head reads, once GQA's groups are uneven after slicing
    (what the uniform `repeat_kv` computed before): an ONNX Gather."""
    return torch.index_select(x, axis, index)


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
        # mean-per-position: sums and real-token counts per (position, unit) of (batch,
        # tokens, units) activations; None when not collected or the layout is not that
        self.position_sum: torch.Tensor | None = None
        self.position_count: torch.Tensor | None = None
        self.attribution: torch.Tensor | None = None
        self.token_mask: torch.Tensor | None = None  # (batch, positions) real tokens, if any
        self.gate: torch.Tensor | None = None  # soft 0..1 keep per unit (learned masks)
        self.all_kept = True  # nothing to replace: pass the activation through untouched
        # hand 4-d activations on in channels-last layout: pooling and convolutions run several
        # times faster in it on CPU, and a conv over a 1-channel input cannot choose it itself
        self.channels_last = False
        self._per_position = False

    def set(self, keep: torch.Tensor, value: torch.Tensor | None = None) -> None:
        """`value`: one per unit, or (positions + 1, units) per position with the tail last
        (mean-per-position, `legoc.ir.tokens.positional`; (batch, tokens, units) layouts)."""
        self.keep.copy_(keep.reshape(self.keep.shape))
        self.all_kept = bool(self.keep.all())
        if value is None:
            return
        like = {"dtype": self.value.dtype, "device": self.keep.device}  # values come from the CPU
        if value.dim() == 2 and self._token_layout():
            self.value = value.to(**like).clone()  # positions x units
        else:
            self.value = value.reshape(self.keep.shape).to(**like).clone()

    def _value_for(self, x: torch.Tensor) -> torch.Tensor:
        """The ablation value broadcastable to `x` (per-position values cut to its length)."""
        if self._per_position_value():
            return positional(self.value, 0, x.shape[1])
        return self.value

    def _token_layout(self) -> bool:
        return self.ndim == 3 and self.axis == 2  # (batch, tokens, units)

    def _per_position_value(self) -> bool:
        return self._token_layout() and self.value.dim() == 2

    def _accumulator(self) -> torch.Tensor:
        """Per-unit sums on the module's device (float64; MPS has no float64)."""
        dtype = torch.float32 if self.keep.device.type == "mps" else torch.float64
        return torch.zeros(self.keep.shape[0], dtype=dtype, device=self.keep.device)

    def start_means(self, per_position: bool = False) -> None:
        self.mean_sum, self.mean_count = self._accumulator(), 0
        self.position_sum = self.position_count = None
        self._per_position = per_position and self._token_layout()

    def start_attribution(self) -> None:
        self.attribution = self._accumulator()

    def _add_positions(self, sums: torch.Tensor, counts: torch.Tensor) -> None:
        if self.position_sum is None:
            self.position_sum, self.position_count = sums, counts
            return
        grow = sums.shape[0] - self.position_sum.shape[0]  # batches of different lengths
        if grow > 0:
            self.position_sum = F.pad(self.position_sum, (0, 0, 0, grow))
            self.position_count = F.pad(self.position_count, (0, grow))
        self.position_sum[: sums.shape[0]] += sums
        self.position_count[: counts.shape[0]] += counts

    def means(self) -> torch.Tensor:
        """The collected means: per unit, or (positions + 1, units) when collected per position
        (positions no real token reached, and the tail, take the overall mean)."""
        overall = self.mean_sum / max(self.mean_count, 1)
        if self.position_sum is None:
            return overall.float()
        counts = self.position_count.unsqueeze(-1)
        table = torch.where(counts > 0, self.position_sum / counts.clamp(min=1), overall)
        return torch.cat([table, overall.unsqueeze(0)]).float()

    def stop(self) -> None:
        self.mean_sum, self.attribution = None, None
        self.position_sum = self.position_count = None

    def _unit_last(self, t: torch.Tensor) -> torch.Tensor:
        """View as (batch, other positions..., units) so reductions are uniform."""
        return t.movedim(self.axis, -1).reshape(t.shape[0], -1, t.shape[self.axis])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.mean_sum is not None:
            flat = self._unit_last(x.detach()).to(self.mean_sum.dtype)
            mask = self.token_mask
            if mask is not None and x.dim() == 3 and self.axis == 2 and x.shape[:2] == mask.shape:
                weights = mask.to(flat.dtype).unsqueeze(-1)  # padding never enters a mean
                self.mean_sum += (flat * weights).sum(dim=(0, 1))
                self.mean_count += float(weights.sum())
                if self._per_position:
                    self._add_positions((flat * weights).sum(dim=0), weights.sum(dim=0)[:, 0])
            else:
                self.mean_sum += flat.sum(dim=(0, 1))
                self.mean_count += flat.shape[0] * flat.shape[1]
        if self.attribution is not None and x.requires_grad:
            value = self.value[-1] if self._per_position_value() else self.value.reshape(-1)
            detached = self._unit_last(x.detach())

            def accumulate(grad: torch.Tensor) -> None:
                per_item = ((value - detached) * self._unit_last(grad)).sum(dim=1)
                self.attribution += per_item.abs().sum(dim=0).to(self.attribution.dtype)

            x.register_hook(accumulate)
        if self.gate is None and self.all_kept:
            return x
        replacement = self._value_for(x)  # (`value` above is the attribution hook's)
        if self.gate is not None:
            return replacement + self.gate.reshape(self.keep.shape) * (x - replacement)
        return torch.where(self.keep, x, replacement)


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


def _to_length(per_position: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Constants captured per position one longer than the search data (`legoc.ir.tokens`),
    cut to `x`'s positions (the axis before the channels)."""
    if per_position.dim() == x.dim() and x.dim() >= 2 and per_position.shape[-2] > x.shape[-2]:
        return per_position.narrow(-2, 0, x.shape[-2])
    return per_position


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
    x = torch.where(keep.bool(), x, _to_length(const, x))
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
    carries: bool = True,
) -> torch.Tensor:
    """A layer (or RMS) norm over the kept channels of the last dim, with the removed ones'
    constants folded into the statistics (`sums[..., 0]` = their sum, `sums[..., 1]` = their
    sum of squares, `removed` = how many), followed by the *carriers* that let each reader
    recompute what the removed channels would have given it: `rstd * basis` (the constants,
    factored over positions), `-mean * rstd` (layer norm only) and ones (for the norm's bias).
    Each reader holds one column per carrier, so the block stays exact with the removed
    channels gone. Where the constants vary too much over positions for that to be smaller,
    `direct` holds the removed channels' scale and shift and `basis` their constants: the
    carriers are then the removed channels' outputs themselves. A norm that *restates* its
    units (`carries` False: its output is ablated again, `legoc.ir.handlers.norm`) needs no
    carriers: its removed channels' outputs are constants its readers folded."""
    n = x.shape[-1] + removed
    sums, basis = _to_length(sums, x), _to_length(basis, x)
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
    if not carries:
        return y
    if direct is not None:
        carriers = [(basis - mean) * rstd * direct[0] + direct[1]]
    else:
        carriers = [rstd * basis] if basis.shape[-1] else []
        if not rms:
            carriers.append(-mean * rstd)
        carriers.append(torch.ones_like(rstd))
    return torch.cat([y, *(c.expand(*y.shape[:-1], c.shape[-1]) for c in carriers)], dim=-1)


def slice_axis(x: torch.Tensor, dim: int = 0, start=None, end=None, step: int = 1):
    """`aten.slice.Tensor` as Python indexing: its bounds stay traced values when the ONNX
    exporter runs the graph (the aten overload would bake in the example's token count, e.g.
    `position_ids[:, :tokens]`)."""
    dim = dim % x.dim()
    return x[(slice(None),) * dim + (slice(start, end, step),)]
