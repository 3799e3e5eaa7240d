"""Norms over units, class tokens and shared weights in the blocks people use (issue 15).

Each tiny model is written after its family's block; each test checks that the intended units
are units (or names exactly what freezes them and why), that fold + slice on random kept sets
computes what the masked model computes, and, for several, onnxruntime parity of the block."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from legoc.export.writer import PARITY_TOLERANCE, export_block
from legoc.frontend.load import trace
from legoc.ir import ops
from legoc.ir.core import IR, build_ir
from legoc.ir.masking import masked_model
from legoc.passes.rewrite import BLOCK_PIPELINE, rewrite_pipeline
from legoc.passes.rewrite.fold_ablations import FoldAblations
from legoc.passes.rewrite.slice_units import SliceUnits
from legoc.scoring.scorer import Scorer
from legoc.task.data import Split
from legoc.task.metrics import METRICS
from tests.helpers import assert_float_close, float_steps

D, T, IN = 16, 5, 6


def ir_of(model: nn.Module, example: dict[str, torch.Tensor], outputs=None) -> IR:
    names = list(example)
    return build_ir(trace(model.eval(), names, example), names, example, outputs=outputs)


def groups_of(ir: IR, space: str) -> list[int]:
    return sorted({g.index for g in ir.groups for s, _ in g.members if s == space})


def frozen(ir: IR, space: str) -> list[str | None]:
    return [ir.groups[g].frozen for g in groups_of(ir, space)]


def removable(ir: IR, *spaces: str) -> bool:
    return all(f is None for space in spaces for f in frozen(ir, space))


def random_kept(ir: IR, seed: int) -> IR:
    """About half the removable groups removed, each unit at a random constant."""
    rng = np.random.default_rng(seed)
    groups = ir.removable_groups()
    removed = [g for g in groups if rng.random() < 0.5]
    out = ir.with_kept(ir.mask_for(removed))
    gen = torch.Generator().manual_seed(seed)
    out.ablation = {n: torch.randn(s.size, generator=gen) for n, s in sorted(ir.spaces.items())}
    return out


def run64(gm: torch.fx.GraphModule, inputs: list[torch.Tensor], double=True) -> torch.Tensor:
    """Both sides in float64, so what is compared is the rewrite, not float32 rounding (unless
    the model casts to float32 itself, as Llama's RMS norm does)."""
    gm = copy.deepcopy(gm).double() if double else gm
    with torch.no_grad():
        return gm(*[x.double() if x.is_floating_point() and double else x for x in inputs])


def check_sliced(ir: IR, inputs: list[torch.Tensor], seeds=(0, 1), double=True) -> IR:
    """Fold + slice of random kept sets equals the masked model; returns the last block."""
    for seed in seeds:
        masked = random_kept(ir, seed)
        block = rewrite_pipeline(BLOCK_PIPELINE).run(masked).ir
        expected = run64(masked_model(masked), inputs, double)
        assert_float_close(run64(block.gm, inputs, double), expected)
    assert block.param_count() < ir.param_count()
    params = dict(ir.gm.named_parameters())
    for name, p in block.gm.named_parameters():  # nothing grows (carriers cost no more)
        assert name not in params or all(a <= b for a, b in zip(p.shape, params[name].shape))
    return block


def check_parity(ir: IR, data: dict[str, torch.Tensor], tmp_path) -> float:
    masked = random_kept(ir, 5)
    block = rewrite_pipeline(BLOCK_PIPELINE).run(masked).ir
    split = Split("search", data, None)
    diff = export_block(block, masked_model(masked), split, tmp_path / "block.onnx", {})
    assert diff <= PARITY_TOLERANCE
    return diff


def rows(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# -- a pre-LN transformer block ------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention with heads on their own axis (scaled_dot_product_attention)."""

    def __init__(self, heads: int = 2):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.heads = heads

    def forward(self, x):
        b, t, _ = x.shape

        def split(h):
            return h.view(b, t, self.heads, D // self.heads).transpose(1, 2)

        a = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        return self.o(a.transpose(1, 2).reshape(b, t, D))


class PreLN(nn.Module):
    def __init__(self, norm=nn.LayerNorm):
        super().__init__()
        self.embed = nn.Linear(IN, D)
        self.ln1, self.ln2, self.ln_f = norm(D), norm(D), norm(D)
        self.attn = Attention()
        self.fc1, self.fc2 = nn.Linear(D, 2 * D), nn.Linear(2 * D, D)
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.attn(self.ln1(h))
        h = h + self.fc2(F.gelu(self.fc1(self.ln2(h))))
        return self.head(self.ln_f(h).mean(1))


def test_pre_ln_stream_heads_and_neurons_are_units_and_slice_exactly(tmp_path):
    torch.manual_seed(0)
    ir = ir_of(PreLN(), {"x": rows(2, T, IN)})
    assert len(groups_of(ir, "embed")) == D  # the stream: embed, attn.o and fc2 coupled
    assert {s for g in groups_of(ir, "embed") for s, _ in ir.groups[g].members} == {
        "embed",
        "attn.o",
        "fc2",
    }
    assert len(groups_of(ir, "attn.q")) == 2 and len(groups_of(ir, "fc1")) == 2 * D
    assert removable(ir, "embed", "attn.q", "fc1")
    assert frozen(ir, "head") == ["reaches the model output"] * 3
    block = check_sliced(ir, [rows(7, T, IN, seed=3)])
    assert any(n.target is ops.carried_norm for n in block.gm.graph.nodes)
    check_parity(ir, {"x": rows(32, T, IN, seed=4)}, tmp_path)


# -- a post-LN stream (BERT): the norm after the residual add --------------------------------


class PostLN(nn.Module):
    """BERT's layer: LayerNorm(x + sublayer(x)), twice, after a normed embedding."""

    def __init__(self):
        super().__init__()
        self.embed, self.ln0 = nn.Linear(IN, D), nn.LayerNorm(D)
        self.attn, self.ln1 = Attention(), nn.LayerNorm(D)
        self.fc1, self.fc2, self.ln2 = nn.Linear(D, 2 * D), nn.Linear(2 * D, D), nn.LayerNorm(D)
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        h = self.ln0(self.embed(x))
        h = self.ln1(h + self.attn(h))
        h = self.ln2(h + self.fc2(F.gelu(self.fc1(h))))
        return self.head(h[:, 0])


def test_post_ln_stream_is_units_restated_by_each_norm_and_slices_exactly(tmp_path):
    """A stream channel held at constants at all its writers still varies after the norm
    (normalised by the kept channels' statistics), and the residual add carries that into the
    next norm, so no reader could fold it: each such norm restates its units (a space of its
    own, coupled with its input), and a removed channel is held at its mean after it too."""
    torch.manual_seed(0)
    model = PostLN().eval()
    ir = ir_of(model, {"x": rows(2, T, IN)})
    for norm in ("ln0", "ln1"):
        assert ir.spaces[norm].kind == "norm" and ir.spaces[norm].size == D
    assert "ln2" not in ir.spaces  # read by the head only: its readers get carriers
    stream = groups_of(ir, "embed")
    assert len(stream) == D and all(ir.groups[g].frozen is None for g in stream)
    members = {s for g in stream for s, _ in ir.groups[g].members}
    assert members == {"embed", "ln0", "attn.o", "ln1", "fc2"}
    assert removable(ir, "attn.q", "fc1")
    block = check_sliced(ir, [rows(7, T, IN, seed=3)], seeds=(0, 1, 2))
    carried = [
        n.kwargs.get("carries", True) for n in block.gm.graph.nodes if n.target is ops.carried_norm
    ]
    assert sorted(carried) == [False, False, True]
    check_parity(ir, {"x": rows(16, T, IN, seed=4)}, tmp_path)
    # why the norm's output must be ablated again: a constant channel does not stay constant
    x = rows(64, T, IN, seed=5)
    with torch.no_grad():
        h = model.embed(x)
        h[..., 0] = 0.5
        h = model.ln0(h)
        a = model.attn(h)
        a[..., 0] = -0.2
        after = model.ln1(h + a)[..., 0]
    assert float((after - after[:1]).abs().max()) > 1000 * float_steps(after)


@pytest.mark.parametrize("model", [PreLN, PostLN])
def test_removing_the_whole_stream_leaves_norms_of_constants(model):
    torch.manual_seed(0)
    ir = ir_of(model(), {"x": rows(2, T, IN)})
    masked = ir.with_kept(ir.mask_for(groups_of(ir, "embed")))
    masked.ablation = {n: torch.randn(s.size) for n, s in sorted(ir.spaces.items())}
    block = rewrite_pipeline(BLOCK_PIPELINE).run(masked).ir
    x = [rows(4, T, IN, seed=9)]
    assert_float_close(run64(block.gm, x), run64(masked_model(masked), x))


# -- RMS norm, written out as Llama does -----------------------------------------------------


class LlamaRMSNorm(nn.Module):
    """transformers' LlamaRMSNorm, as written there."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class LlamaBlock(nn.Module):
    def __init__(self, norm=LlamaRMSNorm):
        super().__init__()
        self.embed = nn.Linear(IN, D, bias=False)
        self.norm, self.norm_f = norm(D), norm(D)
        self.gate = nn.Linear(D, 2 * D, bias=False)
        self.up = nn.Linear(D, 2 * D, bias=False)
        self.down = nn.Linear(2 * D, D, bias=False)
        self.head = nn.Linear(D, 3, bias=False)

    def forward(self, x):
        h = self.embed(x)
        n = self.norm(h)
        h = h + self.down(F.silu(self.gate(n)) * self.up(n))
        return self.head(self.norm_f(h)[:, -1])


@pytest.mark.parametrize("norm", [LlamaRMSNorm, nn.RMSNorm], ids=["written-out", "nn.RMSNorm"])
def test_rms_norm_stream_and_swiglu_neurons_slice_exactly(norm, tmp_path):
    torch.manual_seed(0)
    model = LlamaBlock() if norm is LlamaRMSNorm else LlamaBlock(lambda d: nn.RMSNorm(d, 1e-6))
    ir = ir_of(model, {"x": rows(2, T, IN)})
    norms = [n for n in ir.gm.graph.nodes if n.target is F.rms_norm]
    assert len(norms) == 2  # pow/mean/rsqrt/mul fused into one op
    assert len(groups_of(ir, "embed")) == D and len(groups_of(ir, "gate")) == 2 * D
    assert removable(ir, "embed", "gate", "up", "down")
    check_sliced(ir, [rows(7, T, IN, seed=3)], double=norm is not LlamaRMSNorm)
    if norm is LlamaRMSNorm:
        check_parity(ir, {"x": rows(32, T, IN, seed=4)}, tmp_path)


# -- group norm in a conv block --------------------------------------------------------------


class GroupNormBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(8, 12), nn.Linear(12, 3)

    def forward(self, x):
        h = self.conv2(torch.relu(self.gn(self.conv1(x))))
        return self.fc2(torch.relu(self.fc1(h.mean((2, 3)))))


def test_group_norm_before_a_nonlinearity_couples_each_group():
    """Its output on a channel held alone still varies (test_group_norm_blocks): whole groups
    are the units, and slicing keeps the groups left."""
    torch.manual_seed(0)
    ir = ir_of(GroupNormBlock(), {"x": rows(2, 3, 6, 6)})
    assert [len(ir.groups[g].members) for g in groups_of(ir, "conv1")] == [4, 4]
    assert removable(ir, "conv1", "conv2", "fc1")
    check_sliced(ir, [rows(5, 3, 6, 6, seed=3)], seeds=(0, 1, 2, 3))


# -- ConvNeXt: LayerNorm2d, layer scale, stochastic depth --------------------------------------


class LayerNorm2d(nn.LayerNorm):
    """torchvision.models.convnext.LayerNorm2d."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return torch.permute(x, self.dims)


@torch.fx.wrap
def stochastic_depth(x, p: float, mode: str, training: bool):
    """torchvision.ops.stochastic_depth (fx-wrapped there too): the identity in eval."""
    if not training or p == 0.0:
        return x
    keep = torch.empty([x.shape[0]] + [1] * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class CNBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.rand(dim, 1, 1))
        self.p = 0.1

    def forward(self, x):
        result = self.layer_scale * self.block(x)
        return stochastic_depth(result, self.p, "row", self.training) + x


class ConvNeXt(nn.Module):
    def __init__(self, c: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 2, stride=2), LayerNorm2d(c, eps=1e-6))
        self.stage1 = CNBlock(c)
        self.down = nn.Sequential(LayerNorm2d(c, eps=1e-6), nn.Conv2d(c, 2 * c, 2, stride=2))
        self.stage2 = CNBlock(2 * c)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.norm = LayerNorm2d(2 * c, eps=1e-6)
        self.head = nn.Linear(2 * c, 3)

    def forward(self, x):
        h = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(torch.flatten(self.norm(self.pool(h)), 1))


def convnext_ir():
    torch.manual_seed(0)
    model = ConvNeXt().eval()
    return model, ir_of(model, {"x": rows(2, 3, 16, 16)})


def test_convnext_layer_norm_2d_keeps_its_permutes_and_neurons_slice_exactly(tmp_path):
    model, ir = convnext_ir()
    x = rows(5, 3, 16, 16, seed=3)
    with torch.no_grad():
        assert_float_close(ir.gm(x), model(x))  # LayerNorm2d traced through, not replaced
    assert removable(ir, "stage1.block.3", "stage2.block.3")  # the 4x MLP neurons
    check_sliced(ir, [x])
    check_parity(ir, {"x": rows(16, 3, 16, 16, seed=4)}, tmp_path)


class NormedConvs(nn.Module):
    """conv -> LayerNorm2d -> zero-padded conv: the carriers enter a conv, borders included."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = LayerNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv2(self.norm(self.conv1(x)))).mean((2, 3)))


def test_layer_norm_2d_read_by_a_padded_conv_slices_exactly_and_folds_once():
    torch.manual_seed(0)
    ir = ir_of(NormedConvs(), {"x": rows(2, 3, 6, 6)})
    assert removable(ir, "conv1", "conv2") and ir.analysis.norm_readers
    check_sliced(ir, [rows(5, 3, 6, 6, seed=3)])
    folded = FoldAblations().run(random_kept(ir, 0))
    assert folded.stats["norms_held"] == 1
    again = FoldAblations().run(folded.ir)  # held at the same channels: nothing to do
    assert not again.changed and "norms_held" not in again.stats
    sliced = SliceUnits().run(again.ir)
    assert sliced.stats["norms_carried"] == 1
    assert not SliceUnits().run(sliced.ir).changed


def test_convnext_stage_streams_are_units():
    """Depthwise convs couple the stream's channels, stochastic depth is dropped at capture."""
    _, ir = convnext_ir()
    assert removable(ir, "down.1", "stage2.block.0", "stage2.block.5")
    check_sliced(ir, [rows(5, 3, 16, 16, seed=5)])


# -- ViT: class token and position embedding --------------------------------------------------


class ViT(nn.Module):
    def __init__(self, patch: int = 4, size: int = 12):
        super().__init__()
        self.conv_proj = nn.Conv2d(3, D, patch, stride=patch)
        tokens = (size // patch) ** 2 + 1
        self.class_token = nn.Parameter(torch.randn(1, 1, D))
        self.pos_embedding = nn.Parameter(0.1 * torch.randn(1, tokens, D))
        self.block = PreLN()
        self.ln = nn.LayerNorm(D)
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, D, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        x = x + self.pos_embedding
        b = self.block
        x = x + b.attn(b.ln1(x))
        x = x + b.fc2(F.gelu(b.fc1(b.ln2(x))))
        return self.head(self.ln(x)[:, 0])


def test_vit_class_token_and_position_embedding_pass_units_through(tmp_path):
    torch.manual_seed(0)
    ir = ir_of(ViT(), {"x": rows(2, 3, 12, 12)})
    assert removable(ir, "conv_proj", "block.attn.q", "block.fc1")
    assert {s for g in groups_of(ir, "conv_proj") for s, _ in ir.groups[g].members} == {
        "conv_proj",
        "block.attn.o",
        "block.fc2",
    }
    block = check_sliced(ir, [rows(6, 3, 12, 12, seed=3)])
    widths = {tuple(p.shape) for n, p in block.gm.named_parameters() if n == "class_token"}
    assert widths and next(iter(widths))[2] < D  # the class token was sliced with its units
    check_parity(ir, {"x": rows(16, 3, 12, 12, seed=4)}, tmp_path)


# -- weights used more than once --------------------------------------------------------------


class TiedLM(nn.Module):
    """Token embedding and output projection share one weight (tie_word_embeddings)."""

    def __init__(self, vocab: int = 12):
        super().__init__()
        self.embed = nn.Embedding(vocab, D)
        self.ln = nn.LayerNorm(D)
        self.fc1, self.fc2 = nn.Linear(D, 2 * D), nn.Linear(2 * D, D)
        self.ln_f = nn.LayerNorm(D)

    def forward(self, ids):
        h = self.embed(ids)
        h = h + self.fc2(F.gelu(self.fc1(self.ln(h))))
        return F.linear(self.ln_f(h[:, -1]), self.embed.weight)


def test_tied_embeddings_freeze_the_vocabulary_naming_both_uses():
    torch.manual_seed(0)
    ids = torch.randint(0, 12, (2, T), generator=torch.Generator().manual_seed(0))
    ir = ir_of(TiedLM(), {"ids": ids}, outputs=[1, 4])
    reasons = set(frozen(ir, "embed"))
    assert len(reasons) == 1
    (reason,) = reasons
    assert reason == "weight embed.weight is used 2 times (embedding, linear_2)"  # nn.Embedding
    assert removable(ir, "fc1")
    block = check_sliced(ir, [torch.randint(0, 12, (5, T))])
    assert tuple(block.gm.get_parameter("embed.weight").shape) == (12, D)


class SharedLayer(nn.Module):
    """One Linear-MLP applied twice (ALBERT's cross-layer sharing), written out."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(IN, D)
        self.fc1, self.fc2 = nn.Linear(D, 2 * D), nn.Linear(2 * D, D)
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        h = self.inp(x)
        for _ in range(2):
            h = h + self.fc2(torch.relu(self.fc1(h)))
        return self.head(h)


def shared_layer_ir() -> IR:
    torch.manual_seed(0)
    return ir_of(SharedLayer(), {"x": rows(2, IN)})


def test_a_layer_applied_twice_has_one_unit_per_neuron_across_its_uses(tmp_path):
    ir = shared_layer_ir()
    neurons = groups_of(ir, "fc1")
    assert len(neurons) == 2 * D and removable(ir, "fc1", "fc2", "inp")
    for j, g in enumerate(neurons):  # neuron j at both uses: one unit
        assert ir.groups[g].members == (("fc1", j), ("fc1__use_1", j))
        assert ir.groups[g].params == D + 1 + D  # its row, bias and fc2 column: counted once
    assert ir.total_units() == {"inp": D, "fc1": 2 * D, "fc2": D, "head": 3}
    assert "  fc1: linear applied 2 times, 32/32 units kept\n" in ir.text()  # one line per weight
    block = check_sliced(ir, [rows(5, IN, seed=3)], seeds=(0, 1, 2))
    weights = [n for n, _ in block.gm.named_parameters() if n.startswith(("fc1.weight", "fc2.w"))]
    assert sorted(weights) == ["fc1.weight", "fc2.weight"]  # sliced once, not copied per use
    check_parity(ir, {"x": rows(32, IN, seed=4)}, tmp_path)


class UseHooks:
    """The oracle, written without legoc: forward hooks on the shared modules that replace the
    removed units by the ablation value of the use being run (counted per module)."""

    def __init__(self, model: nn.Module, removed: dict[str, np.ndarray], values):
        self.calls: dict[str, int] = {}
        for name, gone in removed.items():
            module = model.get_submodule(name)
            module.register_forward_hook(functools.partial(self.ablate, name, gone, values))

    def ablate(self, name, gone, values, module, args, out):
        k = self.calls.get(name, 0)
        self.calls[name] = k + 1
        value = values[name if k == 0 else f"{name}__use_{k}"]
        mask = torch.from_numpy(gone)
        return torch.where(mask, value.to(out.dtype), out)


def test_a_removed_neuron_is_ablated_at_every_use_with_that_uses_mean():
    ir = shared_layer_ir()
    model = SharedLayer().eval()
    model.load_state_dict(dict(ir.gm.named_parameters()))
    data = {"x": rows(64, IN, seed=6)}
    values = dict(Scorer(ir, Split("search", data, None), METRICS["kl"], "mean").values)
    assert not torch.allclose(values["fc1"], values["fc1__use_1"])  # one mean per use
    neurons = groups_of(ir, "fc1")
    masked = ir.with_kept(ir.mask_for(neurons[::3]))
    masked.ablation = values
    gone = ~masked.kept["fc1"]
    assert np.array_equal(gone, ~masked.kept["fc1__use_1"])
    UseHooks(model, {"fc1": gone}, values)
    x = rows(9, IN, seed=7)
    with torch.no_grad():
        expected = model(x)
        assert_float_close(masked_model(masked)(x), expected)
        folded = FoldAblations().run(masked)
        block = SliceUnits().run(folded.ir).ir
        assert_float_close(block.gm(x), expected)
    assert folded.stats == {"consumers_folded": 2, "constants_added": 2}  # one per use
    bias = folded.ir.gm.get_parameter("fc2.bias")  # the shared bias: no use's constant in it
    assert torch.equal(bias, ir.gm.get_parameter("fc2.bias"))
    assert not FoldAblations().run(folded.ir).changed


class SharedOnRawInput(nn.Module):
    """A Linear applied to the raw input and again to units: its columns cannot be cut."""

    def __init__(self):
        super().__init__()
        self.inp, self.fc, self.head = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, 3)

    def forward(self, x):
        return self.head(torch.relu(self.fc(x)) + self.fc(torch.relu(self.inp(x))))


def test_a_shared_weight_reading_units_at_one_use_only_freezes_them_naming_why():
    torch.manual_seed(0)
    ir = ir_of(SharedOnRawInput(), {"x": rows(2, D)})
    assert set(frozen(ir, "inp")) == {"weight fc.weight applied 2 times with a non-unit tensor"}
    assert len(groups_of(ir, "fc")) == D and removable(ir, "fc")
    check_sliced(ir, [rows(5, D, seed=3)])


class SharedPreLN(nn.Module):
    """A pre-LN block (attention and MLP) applied three times, its norms shared too."""

    def __init__(self):
        super().__init__()
        self.embed, self.ln1, self.ln2 = nn.Linear(IN, D), nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn = Attention()
        self.fc1, self.fc2 = nn.Linear(D, 2 * D), nn.Linear(2 * D, D)
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        h = self.embed(x)
        for _ in range(3):
            h = h + self.attn(self.ln1(h))
            h = h + self.fc2(F.gelu(self.fc1(self.ln2(h))))
        return self.head(h.mean(1))


def test_a_pre_ln_block_applied_three_times_keeps_heads_and_neurons_as_units(tmp_path):
    """The stream's carriers are built per norm reader, so a shared reader freezes the stream
    (named); heads and neurons are units across the three uses."""
    torch.manual_seed(0)
    ir = ir_of(SharedPreLN(), {"x": rows(2, T, IN)})
    heads, neurons = groups_of(ir, "attn.q"), groups_of(ir, "fc1")
    assert len(heads) == 2 and all(len(ir.groups[g].members) == 3 * 3 * (D // 2) for g in heads)
    assert len(neurons) == 2 * D and all(len(ir.groups[g].members) == 3 for g in neurons)
    assert removable(ir, "attn.q", "fc1")
    assert set(frozen(ir, "embed")) == {
        "read through a norm by linear_1: weight attn.q.weight applied 3 times"
    }
    block = check_sliced(ir, [rows(7, T, IN, seed=3)])
    names = {n for n, _ in block.gm.named_parameters() if n.startswith(("attn.", "fc"))}
    assert names == {f"{m}.{p}" for m in ("attn.q", "attn.k", "attn.v", "attn.o", "fc1", "fc2")
                     for p in ("weight", "bias")}  # fmt: skip
    check_parity(ir, {"x": rows(32, T, IN, seed=4)}, tmp_path)


# -- ALBERT: one layer's weights applied num_hidden_layers times --------------------------------

transformers = pytest.importorskip("transformers")


class TinyAlbert(nn.Module):
    def __init__(self):
        super().__init__()
        config = transformers.AlbertConfig(
            vocab_size=40,
            embedding_size=8,
            hidden_size=D,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=24,
            max_position_embeddings=16,
        )
        self.albert = transformers.AlbertModel(config, add_pooling_layer=False)
        self.head = nn.Linear(D, 3)

    def forward(self, input_ids, attention_mask):
        hidden = self.albert(input_ids=input_ids, attention_mask=attention_mask)
        return self.head(hidden.last_hidden_state[:, 0])


@functools.cache
def albert_ir():  # torch.export capture takes seconds: once per session (tests never mutate it)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 40, (2, 7), generator=gen)
    return ir_of(TinyAlbert(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)})


ALBERT_LAYER = "albert.encoder.albert_layer_groups.0.albert_layers.0"


def test_albert_shared_layer_heads_and_neurons_are_units_and_slice_exactly(tmp_path):
    """Each head (its q, k and v rows at both uses) and each FFN neuron (at both uses) is one
    unit; fold + slice equals the masked model, each use ablated with its own constant."""
    ir = albert_ir()
    heads = groups_of(ir, f"{ALBERT_LAYER}.attention.query")
    assert len(heads) == 2 and all(len(ir.groups[g].members) == 3 * (D // 2) * 2 for g in heads)
    neurons = groups_of(ir, f"{ALBERT_LAYER}.ffn")
    assert len(neurons) == 24 and all(len(ir.groups[g].members) == 2 for g in neurons)
    assert removable(ir, f"{ALBERT_LAYER}.attention.query", f"{ALBERT_LAYER}.ffn")
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 40, (16, 7), generator=gen)
    check_sliced(ir, [ids[:5], torch.ones_like(ids[:5])])
    check_parity(ir, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, tmp_path)


# -- Swin: window partition, window attention, relative position bias --------------------------


class SwinBlock(nn.Module):
    """One Swin-T block, written out: LayerNorm, windows by view/permute, attention with a
    relative position bias (matmul + softmax), windows merged back, residual, MLP."""

    def __init__(self, heads: int = 2, window: int = 2):
        super().__init__()
        self.patch = nn.Conv2d(3, D, 2, stride=2)
        self.norm1, self.norm2, self.norm = nn.LayerNorm(D), nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.bias = nn.Parameter(0.1 * torch.randn(heads, window**2, window**2))
        self.fc1, self.fc2 = nn.Linear(D, 2 * D), nn.Linear(2 * D, D)
        self.head = nn.Linear(D, 3)
        self.heads, self.window = heads, window

    def forward(self, x):
        x = self.patch(x).permute(0, 2, 3, 1)
        b, h, w, c = x.shape
        s, n = self.window, self.window**2
        t = self.norm1(x).view(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5)
        t = t.reshape(b * (h // s) * (w // s), n, c)
        qkv = self.qkv(t).reshape(t.shape[0], n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5 + self.bias).softmax(-1)
        o = self.proj((attn @ v).transpose(1, 2).reshape(t.shape[0], n, c))
        o = o.view(b, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        x = x + o
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.head(self.norm(x).mean((1, 2)))


def test_swin_stream_and_neurons_are_units_through_window_partition(tmp_path):
    torch.manual_seed(0)
    ir = ir_of(SwinBlock(), {"x": rows(2, 3, 8, 8)})
    assert removable(ir, "patch", "fc1")  # the stream: patch, proj and fc2 coupled
    assert {s for g in groups_of(ir, "patch") for s, _ in ir.groups[g].members} == {
        "patch",
        "proj",
        "fc2",
    }
    block = check_sliced(ir, [rows(5, 3, 8, 8, seed=3)])
    assert any(n.target is ops.carried_norm for n in block.gm.graph.nodes)
    check_parity(ir, {"x": rows(16, 3, 8, 8, seed=4)}, tmp_path)


def test_swin_window_attention_heads_are_units(tmp_path):
    """qkv(x).reshape(n, T, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0): each head's q, k
    and v rows (and its slice of the relative position bias) are one unit."""
    torch.manual_seed(0)
    ir = ir_of(SwinBlock(), {"x": rows(2, 3, 8, 8)})
    heads = groups_of(ir, "qkv")
    assert len(heads) == 2 and removable(ir, "qkv")
    head_dim = D // 2
    for h, g in enumerate(heads):  # rows ordered (q/k/v, head, channel)
        rows_of = sorted(i for s, i in ir.groups[g].members if s == "qkv")
        assert rows_of == [p * D + h * head_dim + c for p in range(3) for c in range(head_dim)]
    masked = ir.with_kept(ir.mask_for([heads[0]]))
    masked.ablation = {n: torch.randn(s.size) for n, s in sorted(ir.spaces.items())}
    block = rewrite_pipeline(BLOCK_PIPELINE).run(masked).ir
    x = [rows(5, 3, 8, 8, seed=3)]
    assert_float_close(run64(block.gm, x), run64(masked_model(masked), x))
    params = dict(block.gm.named_parameters())
    assert params["qkv.weight"].shape == (3 * head_dim, D) and params["bias"].shape[0] == 1
    check_sliced(ir, x)
    check_parity(ir, {"x": rows(16, 3, 8, 8, seed=4)}, tmp_path)


def test_vit_class_token_read_through_torch_export_keeps_the_stream_units(tmp_path):
    """Captured by torch.export (as torchvision's ViT is), `ln(x)[:, 0]` is an aten slice and
    select along the token axis: both pass the norm's units through to the head."""
    from legoc.frontend.capture import capture

    torch.manual_seed(0)
    model = ViT().eval()
    example = {"x": rows(2, 3, 12, 12)}
    gm = capture(model, example, ["x"])
    assert any("select" in str(n.target) for n in gm.graph.nodes)
    ir = build_ir(gm, ["x"], example)
    assert removable(ir, "conv_proj", "block.attn.q", "block.fc1")
    check_sliced(ir, [rows(6, 3, 12, 12, seed=3)])
    check_parity(ir, {"x": rows(16, 3, 12, 12, seed=4)}, tmp_path)


def test_post_ln_stand_in_scores_supersets_like_the_masked_source_model():
    """The sliced stand-in's norms (carried, no carriers) restate their units again, so a
    search scoring more removals on it computes the masked source model."""
    torch.manual_seed(0)
    ir = ir_of(PostLN(), {"x": rows(2, T, IN)})
    x = rows(48, T, IN, seed=6)
    scorer = Scorer(ir, Split("search", {"x": x}, None), METRICS["kl"])
    rng = np.random.default_rng(0)
    stream = groups_of(ir, "embed")
    base_removed = [int(g) for g in rng.choice(stream, size=4, replace=False)]
    base = scorer.stand_in(ir.mask_for(base_removed))
    sliced_norms = [n for n in base.gm.graph.nodes if n.target is ops.carried_norm]
    assert any(n.kwargs.get("carries") is False for n in sliced_norms)
    for _ in range(3):
        extra = [int(g) for g in rng.choice(ir.removable_groups(), size=5, replace=False)]
        kept = ir.mask_for(sorted(set(base_removed) | set(extra)))
        via_base = scorer.predict(kept, {"x": x}, base=base)
        exact = scorer.predict(kept, {"x": x}, base=base, exact=True)
        assert_float_close(via_base, exact, steps=64)
