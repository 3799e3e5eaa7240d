"""Tiny modules written after torchvision's blocks (torchvision itself is not a test
dependency): the convolutional constructs of the classification zoo, each in a small net."""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn


def stochastic_depth(input: Tensor, p: float, mode: str, training: bool = True) -> Tensor:
    """torchvision.ops.stochastic_depth: drops whole rows (or the batch) while training."""
    if not training or p == 0.0:
        return input
    survival = 1.0 - p
    size = [input.shape[0]] + [1] * (input.ndim - 1) if mode == "row" else [1] * input.ndim
    noise = torch.empty(size, dtype=input.dtype).bernoulli_(survival)
    return input * noise.div_(survival)


torch.fx.wrap("stochastic_depth")  # as torchvision does: an opaque call in the traced graph


class StochasticDepth(nn.Module):
    def __init__(self, p: float, mode: str):
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, input: Tensor) -> Tensor:
        return stochastic_depth(input, self.p, self.mode, self.training)


def conv_bn(cin, cout, kernel=1, stride=1, groups=1, act=nn.ReLU6) -> nn.Sequential:
    """torchvision.ops.Conv2dNormActivation."""
    layers = [
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    return nn.Sequential(*layers, act()) if act is not None else nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation: x * gate(fc2(act(fc1(pool(x)))))."""

    def __init__(self, channels, squeeze, act=nn.ReLU, gate=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation, self.scale_activation = act(), gate()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class InvertedResidual(nn.Module):
    """MobileNetV2 (se=False) / MobileNetV3 (se=True, hardswish) inverted residual."""

    def __init__(self, cin, cout, expand, stride=1, se=False, act=nn.ReLU6):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = [conv_bn(cin, hidden, act=act)] if expand != 1 else []
        layers.append(conv_bn(hidden, hidden, 3, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcitation(hidden, hidden // 4, gate=nn.Hardsigmoid))
        layers.append(conv_bn(hidden, cout, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


class MBConv(nn.Module):
    """EfficientNet's MBConv: expand, depthwise, SE (SiLU), project, stochastic depth."""

    def __init__(self, cin, cout, expand, stride=1, p=0.2):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            conv_bn(cin, hidden, act=nn.SiLU),
            conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.SiLU),
            SqueezeExcitation(hidden, max(1, cin // 4), act=nn.SiLU),
            conv_bn(hidden, cout, act=None),
        )
        self.stochastic_depth = StochasticDepth(p, "row")

    def forward(self, x):
        out = self.block(x)
        if self.use_res:
            out = self.stochastic_depth(out) + x
        return out


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, num_channels, height, width)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's InvertedResidual: split (stride 1) or two branches (stride 2), cat,
    channel shuffle."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        branch = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                conv_bn(cin, cin, 3, stride, groups=cin, act=None),
                conv_bn(cin, branch, act=nn.ReLU),
            )
        self.branch2 = nn.Sequential(
            conv_bn(cin if stride > 1 else branch, branch, act=nn.ReLU),
            conv_bn(branch, branch, 3, stride, groups=branch, act=None),
            conv_bn(branch, branch, act=nn.ReLU),
        )

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ResNeXtBottleneck(nn.Module):
    """torchvision's Bottleneck with groups > 1 (resnext): 1x1, grouped 3x3, 1x1, residual."""

    def __init__(self, cin, width, cout, groups, stride=1):
        super().__init__()
        self.conv1 = conv_bn(cin, width, act=nn.ReLU)
        self.conv2 = conv_bn(width, width, 3, stride, groups=groups, act=nn.ReLU)
        self.conv3 = conv_bn(width, cout, act=None)
        needs = cin != cout or stride > 1
        self.downsample = conv_bn(cin, cout, 1, stride, act=None) if needs else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class RegNetYBlock(nn.Module):
    """RegNet's ResBottleneckBlock with SE (RegNet-Y): a 1x1, b grouped 3x3 + SE, c 1x1."""

    def __init__(self, cin, cout, group_width, stride=1):
        super().__init__()
        self.proj = conv_bn(cin, cout, 1, stride, act=None) if cin != cout or stride > 1 else None
        self.a = conv_bn(cin, cout, act=nn.ReLU)
        self.b = conv_bn(cout, cout, 3, stride, groups=cout // group_width, act=nn.ReLU)
        self.se = SqueezeExcitation(cout, max(1, cin // 4))
        self.c = conv_bn(cout, cout, act=None)

    def forward(self, x):
        shortcut = x if self.proj is None else self.proj(x)
        return F.relu(shortcut + self.c(self.se(self.b(self.a(x)))))


class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size=2):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = torch.cat(features, 1)
        x = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(x)))


class DenseBlockTransition(nn.Module):
    """torchvision's _DenseBlock (each layer reads the cat of all before) + _Transition."""

    def __init__(self, cin, growth, layers):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth) for i in range(layers))
        width = cin + layers * growth
        self.norm, self.conv = nn.BatchNorm2d(width), nn.Conv2d(width, width // 2, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return self.pool(self.conv(F.relu(self.norm(torch.cat(features, 1)))))


class Inception(nn.Module):
    """GoogLeNet's Inception: four parallel branches concatenated along the channels."""

    def __init__(self, cin, c1, c3r, c3, c5r, c5, pool):
        super().__init__()
        act = nn.ReLU
        self.branch1 = conv_bn(cin, c1, act=act)
        self.branch2 = nn.Sequential(conv_bn(cin, c3r, act=act), conv_bn(c3r, c3, 3, act=act))
        self.branch3 = nn.Sequential(conv_bn(cin, c5r, act=act), conv_bn(c5r, c5, 3, act=act))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, 1, 1, ceil_mode=True), conv_bn(cin, pool, act=act)
        )

    def forward(self, x):
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(branches, 1)


class Net(nn.Module):
    """stem conv -> blocks -> global pool -> linear head: a block inside a classifier."""

    def __init__(self, blocks: list[nn.Module], stem: int, width: int, classes: int = 4):
        super().__init__()
        self.stem = conv_bn(3, stem, 3, act=nn.ReLU)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


class AlexNet(nn.Module):
    """torchvision's AlexNet, narrow: convs and linears each followed by `ReLU(inplace=True)`."""

    def __init__(self, width: int = 8, hidden: int = 16, classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Linear(width * 4, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _scramble_norms(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affine: a fresh BN is the identity on zero-mean data,
    which would hide a wrong per-channel slice."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(1 + 0.3 * torch.randn(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))
    return model.eval()


BLOCKS = {
    "mobilenet_v2": lambda: Net([InvertedResidual(8, 8, 4), InvertedResidual(8, 12, 1, 2)], 8, 12),
    "mobilenet_v3": lambda: Net([InvertedResidual(8, 8, 2, se=True, act=nn.Hardswish)], 8, 8),
    "efficientnet": lambda: Net([MBConv(8, 8, 2), MBConv(8, 12, 2, stride=2)], 8, 12),
    "shufflenet_v2": lambda: Net([ShuffleUnit(8, 16, 2), ShuffleUnit(16, 16, 1)], 8, 16),
    "resnext": lambda: Net([ResNeXtBottleneck(8, 8, 16, groups=4)], 8, 16),
    "regnet_y": lambda: Net([RegNetYBlock(8, 16, group_width=4)], 8, 16),
    "densenet": lambda: Net([DenseBlockTransition(8, 4, 3)], 8, 10),
    "inception": lambda: Net([Inception(8, 4, 4, 6, 2, 4, 3)], 8, 17),
}


def make_block_net(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _scramble_norms(BLOCKS[name](), seed)


class RelativePositionAttention(nn.Module):
    """MaxViT's RelativePositionalMultiHeadAttention: fused qkv, a per-head bias gathered from
    a table and laid out with `permute(2, 0, 1)` (varargs), einsum scores."""

    def __init__(self, dim: int = 8, heads: int = 2, side: int = 2):
        super().__init__()
        self.heads, self.head_dim, self.n = heads, dim // heads, side * side
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.merge = nn.Linear(dim, dim)
        self.table = nn.Parameter(torch.randn((2 * side - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"))
        rel = (coords.flatten(1)[:, :, None] - coords.flatten(1)[:, None, :]).permute(1, 2, 0)
        rel = rel + side - 1
        self.register_buffer("index", rel[..., 0] * (2 * side - 1) + rel[..., 1])

    def forward(self, x: Tensor) -> Tensor:  # (B, G, P, D)
        B, G, P, D = x.shape
        q, k, v = torch.chunk(self.to_qkv(x), 3, dim=-1)
        q, k, v = (
            t.reshape(B, G, P, self.heads, self.head_dim).permute(0, 1, 3, 2, 4) for t in (q, k, v)
        )
        scores = torch.einsum("bghid,bghjd->bghij", q, k * self.head_dim**-0.5)
        bias = self.table[self.index.view(-1)].view(self.n, self.n, -1)
        scores = F.softmax(scores + bias.permute(2, 0, 1).contiguous().unsqueeze(0), dim=-1)
        out = torch.einsum("bghij,bghjd->bghid", scores, v)
        return self.merge(out.permute(0, 1, 3, 2, 4).reshape(B, G, P, D))


# -- MaxViT's partition attention and Swin's shifted window attention, after torchvision ------


class WindowPartition(nn.Module):
    """(B, C, H, W) -> (B, windows, p * p, C)."""

    def forward(self, x: Tensor, p: int) -> Tensor:
        B, C, H, W = x.shape
        x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(B, (H // p) * (W // p), p * p, C)


class WindowDepartition(nn.Module):
    def forward(self, x: Tensor, p: int, hp: int, wp: int) -> Tensor:
        B, C = x.shape[0], x.shape[-1]
        x = x.reshape(B, hp, wp, p, p, C).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(B, C, hp * p, wp * p)


class SwapAxes(nn.Module):
    def __init__(self, a: int, b: int):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: Tensor) -> Tensor:
        return torch.swapaxes(x, self.a, self.b)


class PartitionAttentionLayer(nn.Module):
    """MaxViT's window ("window") or grid ("grid": partitions swapped with `swapaxes`)
    attention: pre-norm attention with a gathered relative position bias, then an MLP."""

    def __init__(self, dim: int, heads: int, size: int, grid: int, kind: str):
        super().__init__()
        partitions = grid // size
        self.p, self.g = (size, partitions) if kind == "window" else (partitions, size)
        self.grid = grid
        self.partition, self.departition = WindowPartition(), WindowDepartition()
        swap = kind == "grid"
        self.swap = SwapAxes(-2, -3) if swap else nn.Identity()
        self.unswap = SwapAxes(-2, -3) if swap else nn.Identity()
        self.attn_layer = nn.Sequential(
            nn.LayerNorm(dim), RelativePositionAttention(dim, heads, size), nn.Dropout(0.0)
        )
        self.mlp_layer = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        gh = gw = self.grid // self.p
        x = self.swap(self.partition(x, self.p))
        x = x + self.attn_layer(x)
        x = x + self.mlp_layer(x)
        return self.departition(self.unswap(x), self.p, gh, gw)


class MaxViTNet(nn.Module):
    def __init__(self, dim: int = 8, heads: int = 2, size: int = 2, grid: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.window = PartitionAttentionLayer(dim, heads, size, grid, "window")
        self.grid = PartitionAttentionLayer(dim, heads, size, grid, "grid")
        self.head = nn.Linear(dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.grid(self.window(self.stem(x))).mean((2, 3)))


def relative_position_bias(table: Tensor, index: Tensor, window: list[int]) -> Tensor:
    """torchvision's `_get_relative_position_bias`: (positions, heads) rows by `table[index]`."""
    n = window[0] * window[1]
    bias = table[index].view(n, n, -1)
    return bias.permute(2, 0, 1).contiguous().unsqueeze(0)


def shifted_window_attention(
    input: Tensor,
    qkv_weight: Tensor,
    proj_weight: Tensor,
    bias: Tensor,
    window: list[int],
    heads: int,
    shift: list[int],
    qkv_bias: Tensor | None = None,
    proj_bias: Tensor | None = None,
) -> Tensor:
    """torchvision's `shifted_window_attention` (no dropout, no cosine attention): pad to whole
    windows, cyclic shift, windows, fused qkv, relative position bias, shift mask, back."""
    B, H, W, C = input.shape
    pad_r = (window[1] - W % window[1]) % window[1]
    pad_b = (window[0] - H % window[0]) % window[0]
    x = F.pad(input, (0, 0, 0, pad_r, 0, pad_b))
    _, pH, pW, _ = x.shape
    shift = shift.copy()
    if window[0] >= pH:
        shift[0] = 0
    if window[1] >= pW:
        shift[1] = 0
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    nw = (pH // window[0]) * (pW // window[1])
    x = x.view(B, pH // window[0], window[0], pW // window[1], window[1], C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B * nw, window[0] * window[1], C)
    qkv = F.linear(x, qkv_weight, qkv_bias)
    qkv = qkv.reshape(x.size(0), x.size(1), 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    q = q * (C // heads) ** -0.5
    attn = q.matmul(k.transpose(-2, -1)) + bias
    if sum(shift) > 0:
        mask = x.new_zeros((pH, pW))
        h_slices = ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None))
        w_slices = ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None))
        count = 0
        for h in h_slices:
            for w in w_slices:
                mask[h[0] : h[1], w[0] : w[1]] = count
                count += 1
        mask = mask.view(pH // window[0], window[0], pW // window[1], window[1])
        mask = mask.permute(0, 2, 1, 3).reshape(nw, window[0] * window[1])
        mask = mask.unsqueeze(1) - mask.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        attn = attn.view(x.size(0) // nw, nw, heads, x.size(1), x.size(1))
        attn = (attn + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, x.size(1), x.size(1))
    x = F.softmax(attn, dim=-1).matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), C)
    x = F.linear(x, proj_weight, proj_bias)
    x = x.view(B, pH // window[0], pW // window[1], window[0], window[1], C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, pH, pW, C)
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
    return x[:, :H, :W, :].contiguous()


torch.fx.wrap("relative_position_bias")  # as torchvision does: opaque calls in an fx graph
torch.fx.wrap("shifted_window_attention")


class ShiftedWindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int):
        super().__init__()
        self.window, self.shift, self.heads = [window, window], [shift, shift], heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.table = nn.Parameter(0.5 * torch.randn((2 * window - 1) ** 2, heads))
        coords = torch.stack(
            torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("index", (rel[..., 0] * (2 * window - 1) + rel[..., 1]).flatten())

    def forward(self, x: Tensor) -> Tensor:
        bias = relative_position_bias(self.table, self.index, self.window)
        return shifted_window_attention(
            x,
            self.qkv.weight,
            self.proj.weight,
            bias,
            self.window,
            self.heads,
            self.shift,
            qkv_bias=self.qkv.bias,
            proj_bias=self.proj.bias,
        )


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = ShiftedWindowAttention(dim, heads, window, shift)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SwinNet(nn.Module):
    """A patch conv (torchvision's stem norm left out: a norm of a norm, see benchmarks (c)),
    a plain and a shifted block, a final norm, the head."""

    def __init__(self, dim: int = 8, heads: int = 2, window: int = 2):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.blocks = nn.Sequential(
            SwinBlock(dim, heads, window, 0), SwinBlock(dim, heads, window, window // 2)
        )
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x).permute(0, 2, 3, 1))
        return self.head(self.norm(x).mean((1, 2)))
