"""Group norm over units, as legoc rewrites it: held (removed channels read their constants)
and carried (removed channels gone, their constants folded into each group's statistics).

Both trace cleanly into ONNX: the carried form works for groups of any kept size (a slice can
leave a group with 3 channels next to one with 1), so it computes the statistics with a
channel-to-group matrix and reductions rather than a fixed (groups, channels / groups) reshape.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F


def _per_channel(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """(batch, channels) -> (batch, channels, 1, ...) against an `ndim`-d activation."""
    return t.reshape(t.shape[0], t.shape[1], *[1] * (ndim - 2))


@torch.fx.wrap
def held_group_norm(
    x: torch.Tensor,
    groups: int,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    keep: torch.Tensor,
    const: torch.Tensor,
) -> torch.Tensor:
    """`F.group_norm` whose removed channels (`keep` 0, on axis 1) read their ablation
    constant `const` whatever `x` holds there: what fold-ablations makes of a group norm read
    by Linear/Conv layers, so its statistics are the masked model's while the wires are cut."""
    keep = keep.bool().reshape(-1, *[1] * (x.dim() - 2))
    return F.group_norm(torch.where(keep, x, const), groups, weight, bias, eps)


@torch.fx.wrap
def carried_group_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    member: torch.Tensor,
    size: torch.Tensor,
    removed: torch.Tensor,
    sums: torch.Tensor,
    basis: torch.Tensor,
    basis_group: torch.Tensor,
    mean_group: torch.Tensor,
    eps: float,
    direct: torch.Tensor | None = None,
) -> torch.Tensor:
    """A group norm over the kept channels of axis 1 (`member`: kept channel x group, one-hot)
    with the removed ones' constants folded into each group's statistics (`sums[g, 0]` their
    sum, `sums[g, 1]` their sum of squares, per position; `removed[g]` how many; `size[g]` the
    group's channels before slicing), then the *carriers* that let each reader recompute what
    the removed channels gave it: `rstd_g * basis` (each group's constants, factored over
    positions; `basis_group`: basis column x group), `-mean_g * rstd_g` (`mean_group`: carrier
    x group) and ones. With `direct` (the removed channels' scale and shift; `basis` their
    constants, `basis_group` their groups) the carriers are the removed channels' outputs."""
    nd = x.dim()
    spatial = list(range(2, nd))
    ones = x.new_ones(x.shape[0], 1, *x.shape[2:])
    positions = ones[:1].sum()
    const_sums = sums.expand(*sums.shape[:2], *x.shape[2:]).sum(spatial) if spatial else sums
    count = size * positions
    kept = member.shape[0] > 0  # else `x` is a one-channel stand-in giving the shapes
    sums_kept = x.sum(spatial) @ member if kept else x.new_zeros(x.shape[0], 1)
    mean = (sums_kept + const_sums[:, 0]) / count  # batch x groups
    squares = const_sums[:, 1] - 2 * mean * const_sums[:, 0] + removed * positions * mean * mean
    if kept:
        centred = x - _per_channel(mean @ member.T, nd)
        squares = squares + (centred * centred).sum(spatial) @ member
    rstd = torch.rsqrt(squares / count + eps)
    outputs = []
    if kept:
        y = centred * _per_channel(rstd @ member.T, nd)
        if weight is not None:
            y = y * weight.reshape(-1, *[1] * (nd - 2))
        if bias is not None:
            y = y + bias.reshape(-1, *[1] * (nd - 2))
        outputs.append(y)
    shape = (x.shape[0], -1, *x.shape[2:])
    if direct is not None:
        means = _per_channel(mean @ basis_group.T, nd)
        scales = _per_channel(rstd @ basis_group.T, nd)
        lead = [1] * (nd - 2)
        carried = (basis - means) * scales * direct[0].reshape(-1, *lead) + direct[1].reshape(
            -1, *lead
        )
        return torch.cat([*outputs, carried.expand(*shape)], dim=1)
    carriers = []
    if basis.shape[0]:
        carriers.append((_per_channel(rstd @ basis_group.T, nd) * basis).expand(*shape))
    carriers.append(_per_channel(-(mean * rstd) @ mean_group.T, nd).expand(*shape))
    carriers.append(ones)
    return torch.cat([*outputs, *carriers], dim=1)
