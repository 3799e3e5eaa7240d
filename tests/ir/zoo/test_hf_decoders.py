"""Decoder LLMs of the Hugging Face zoo: query/KV heads and MLP neurons are units.

Tiny randomly initialised configs (no download), captured with torch.export like the BERT
tests. Fused q/k/v (Phi-3's sliced `qkv_proj`, GPT-NeoX's chunked `query_key_value`) and
gate/up projections split into their parts; RoPE (`rotate_half`: slice, neg, cat along
head_dim; partial rotary in Phi and GPT-NeoX) passes heads through. GQA's `repeat_kv`
(unsqueeze, expand, reshape) shares each KV head with its n_rep query heads: with separate
projections each query head is a unit of its own, ablated at its attention output, and the KV
head follows them (removed exactly when all its query heads are); slicing gathers the kept KV
head of each kept query head. A fused q/k/v projection (Phi-3) keeps a KV head and its query
heads as one unit. Every rewrite is checked against the masked model.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from legoc import api
from legoc.export.writer import PARITY_TOLERANCE, export_block
from legoc.frontend.load import trace
from legoc.ir import ops
from legoc.ir.core import build_ir
from legoc.ir.graph import get_attr_tensor
from legoc.ir.masking import masked_model
from legoc.passes.registry import parse_pipeline
from legoc.passes.rewrite import BLOCK_PIPELINE
from legoc.scoring.scorer import Scorer
from legoc.task.metrics import METRICS
from legoc.task.spec import Split
from tests.helpers import assert_float_close

transformers = pytest.importorskip("transformers")

VOCAB, HIDDEN, LAYERS, FFN, TOKENS, HEADS = 40, 32, 2, 48, 9, 4
HEAD_DIM = HIDDEN // HEADS
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    intermediate_size=FFN,
    max_position_embeddings=32,
)

# family -> (config, q projection, k/v projections, MLP up projection(s), kv heads)
FAMILIES = {
    "llama": (
        lambda: transformers.LlamaConfig(num_key_value_heads=2, **COMMON),
        "self_attn.q_proj",
        ("self_attn.k_proj", "self_attn.v_proj"),
        ("mlp.gate_proj", "mlp.up_proj"),
        2,
    ),
    "qwen2": (
        lambda: transformers.Qwen2Config(num_key_value_heads=2, **COMMON),
        "self_attn.q_proj",
        ("self_attn.k_proj", "self_attn.v_proj"),
        ("mlp.gate_proj", "mlp.up_proj"),
        2,
    ),
    "mistral": (
        lambda: transformers.MistralConfig(num_key_value_heads=2, **COMMON),
        "self_attn.q_proj",
        ("self_attn.k_proj", "self_attn.v_proj"),
        ("mlp.gate_proj", "mlp.up_proj"),
        2,
    ),
    "gemma": (
        lambda: transformers.GemmaConfig(num_key_value_heads=1, head_dim=HEAD_DIM, **COMMON),
        "self_attn.q_proj",
        ("self_attn.k_proj", "self_attn.v_proj"),
        ("mlp.gate_proj", "mlp.up_proj"),
        1,
    ),
    "phi": (
        lambda: transformers.PhiConfig(num_key_value_heads=2, partial_rotary_factor=0.5, **COMMON),
        "self_attn.q_proj",
        ("self_attn.k_proj", "self_attn.v_proj"),
        ("mlp.fc1",),
        2,
    ),
    "phi3": (
        lambda: transformers.Phi3Config(
            num_key_value_heads=2, pad_token_id=0, eos_token_id=1, bos_token_id=1, **COMMON
        ),
        "self_attn.qkv_proj",  # q, k, v rows of one fused projection, taken by slicing
        (),
        ("mlp.gate_up_proj",),  # gate and up rows of one projection, taken by chunk
        2,
    ),
    "gpt_neox": (
        lambda: transformers.GPTNeoXConfig(rotary_pct=0.5, **COMMON),
        "attention.query_key_value",  # (heads, 3 * head_dim), chunked along head_dim
        (),
        ("mlp.dense_h_to_4h",),
        HEADS,
    ),
}


class TinyDecoder(nn.Module):
    """A decoder base model read at its last token by a linear head."""

    def __init__(self, family: str):
        super().__init__()
        config = FAMILIES[family][0]()
        config._attn_implementation = "sdpa"
        self.m = transformers.AutoModel.from_config(config)
        self.head = nn.Linear(HIDDEN, 3)

    def forward(self, input_ids):
        # a mask, as callers pass one: without it transformers looks for packed sequences
        # with torch.diff, which the ONNX exporter does not know
        hidden = self.m(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
        return self.head(hidden.last_hidden_state[:, -1])


def make(family: str) -> TinyDecoder:
    torch.manual_seed(0)
    return TinyDecoder(family).eval()


def make_llama() -> TinyDecoder:
    return make("llama")


def make_phi3() -> TinyDecoder:
    return make("phi3")


def tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randint(1, VOCAB, (n, TOKENS), generator=torch.Generator().manual_seed(seed))


_IRS: dict = {}


def decoder_ir(family: str):
    if family not in _IRS:
        model = make(family)
        example = {"input_ids": tokens(2, 0)}
        _IRS[family] = model, build_ir(trace(model, ["input_ids"], example), ["input_ids"], example)
    return _IRS[family]


def layer_groups(ir, family: str, layer: int, part: str) -> list:
    name = f"m.layers.{layer}.{part}"
    return [g for g in ir.groups if any(m[0] == name for m in g.members)]


def head_groups(ir, family: str, layer: int) -> list:
    return layer_groups(ir, family, layer, FAMILIES[family][1])


def neuron_groups(ir, family: str, layer: int) -> list:
    return layer_groups(ir, family, layer, FAMILIES[family][3][0])


ALL = list(FAMILIES)
WITH_HEADS = ALL  # Gemma's one KV head: the layer's heads are one unit (shared_kv.py)


# separate k/v projections with fewer KV heads than query heads (Gemma's MQA: one KV head)
SHARED_KV = ["llama", "qwen2", "mistral", "phi"]
FUSED = ["phi3", "gpt_neox"]  # fused q/k/v rows (GPT-NeoX: one KV head per query head)


def kv_groups(ir, family: str, layer: int) -> list:
    return layer_groups(ir, family, layer, FAMILIES[family][2][0])


def modules_of(group) -> dict[str, list[int]]:
    by_module: dict[str, list[int]] = {}
    for name, channel in group.members:
        by_module.setdefault(name.split(".", 3)[3], []).append(channel)
    return by_module


@pytest.mark.parametrize("family", [*SHARED_KV, "gemma"])
def test_query_heads_are_units_and_a_kv_head_follows_its_query_heads(family):
    _, ir = decoder_ir(family)
    _, q, kv, _, n_kv = FAMILIES[family]
    n_rep = HEADS // n_kv
    removable = set(ir.removable_groups())
    for layer in range(LAYERS):
        heads = head_groups(ir, family, layer)
        assert len(heads) == HEADS and all(g.frozen is None and not g.follows for g in heads)
        for h, g in enumerate(heads):  # one query head: its own channels, nothing else
            assert modules_of(g) == {q: list(range(h * HEAD_DIM, (h + 1) * HEAD_DIM))}
            assert g.index in removable
        kv_heads = kv_groups(ir, family, layer)
        assert len(kv_heads) == n_kv
        for g in kv_heads:
            by_module = modules_of(g)
            assert sorted(by_module) == sorted(kv)
            kv_head = by_module[kv[0]][0] // HEAD_DIM
            for name in kv:  # the k head and the v head, whole
                span = range(kv_head * HEAD_DIM, (kv_head + 1) * HEAD_DIM)
                assert sorted(by_module[name]) == list(span)
            # it follows exactly the query heads that read it; the search never picks it
            readers = heads[kv_head * n_rep : (kv_head + 1) * n_rep]
            assert g.follows == tuple(r.index for r in readers)
            assert g.index not in removable


@pytest.mark.parametrize("family", FUSED)
def test_each_kv_head_and_its_query_heads_are_one_unit_in_a_fused_projection(family):
    _, ir = decoder_ir(family)
    _, q, _, _, n_kv = FAMILIES[family]
    n_rep = HEADS // n_kv
    for layer in range(LAYERS):
        groups = head_groups(ir, family, layer)
        assert len(groups) == n_kv and all(g.frozen is None and not g.follows for g in groups)
        for g in groups:  # the n_rep query heads' rows and the KV head's k and v rows
            assert list(modules_of(g)) == [q]
            assert len(modules_of(g)[q]) == (n_rep + 2) * HEAD_DIM


@pytest.mark.parametrize("family", ALL)
def test_mlp_neurons_are_units(family):
    _, ir = decoder_ir(family)
    for layer in range(LAYERS):
        neurons = neuron_groups(ir, family, layer)
        assert len(neurons) == FFN and all(g.frozen is None for g in neurons)
        # a gated MLP couples each gate neuron with its up neuron (fused: two rows of one weight)
        gated = family not in ("phi", "gpt_neox")
        assert all(len(g.members) == (2 if gated else 1) for g in neurons)


def _sliced_vs_masked(family: str, removed: list[int]):
    model, ir = decoder_ir(family)
    scorer = Scorer(ir, Split("search", {"input_ids": tokens(48, 3)}, None), METRICS["kl"], "mean")
    masked = ir.with_kept(ir.mask_for(removed))
    masked.ablation = dict(scorer.values)
    block = parse_pipeline(BLOCK_PIPELINE).run(masked).ir
    fresh = tokens(7, 11)
    with torch.no_grad():
        assert_float_close(block.gm(fresh), masked_model(masked)(fresh))
        assert_float_close(ir.gm(fresh), model(fresh))  # the capture itself
    return ir, block


@pytest.mark.parametrize("family", ALL)
@pytest.mark.parametrize("seed", [0, 1])
def test_sliced_graph_equals_the_masked_model(family, seed):
    _, ir = decoder_ir(family)
    free = [g for g in ir.removable_groups() if not ir.groups[g].dead]
    rng = np.random.default_rng(seed)
    removed = sorted(rng.choice(free, size=len(free) // 2, replace=False).tolist())
    _, block = _sliced_vs_masked(family, removed)
    assert block.param_count() < ir.param_count()


@pytest.mark.parametrize("family", ALL)
def test_a_random_half_exports_with_parity(family, tmp_path):
    """Heads, neurons and (untied) residual stream channels removed: the ONNX block computes
    the masked model."""
    _, ir = decoder_ir(family)
    free = [g for g in ir.removable_groups() if not ir.groups[g].dead]
    rng = np.random.default_rng(7)
    removed = sorted(rng.choice(free, size=len(free) // 2, replace=False).tolist())
    _, block = _sliced_vs_masked(family, removed)
    masked = ir.with_kept(ir.mask_for(removed))
    scorer = Scorer(ir, Split("search", {"input_ids": tokens(48, 3)}, None), METRICS["kl"], "mean")
    masked.ablation = dict(scorer.values)
    split = Split("search", {"input_ids": tokens(16, 5)}, None)
    diff = export_block(block, masked_model(masked), split, tmp_path / "block.onnx", {})
    assert diff <= PARITY_TOLERANCE


@pytest.mark.parametrize("family", WITH_HEADS)
def test_removed_heads_leave_the_attention_weights(family):
    _, ir = decoder_ir(family)
    gone = head_groups(ir, family, 0)[0]
    _, block = _sliced_vs_masked(family, [gone.index])
    params = dict(block.gm.named_parameters())
    for name in {m[0] for m in gone.members}:
        left = ir.spaces[name].size - sum(m[0] == name for m in gone.members)
        if left == 0:  # MQA: the layer's only KV head and every query head gone
            assert f"{name}.weight" not in params
        else:
            assert params[f"{name}.weight"].shape[0] == left


def _extract(tmp_path, family: str, method: str):
    model = make(family)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    (tmp_path / "arch.py").write_text(
        f"from tests.ir.zoo.test_hf_decoders import make\n\ndef build():\n"
        f"    return make({family!r})\n"
    )
    data = {"input_ids": tokens(64, 1)}
    with torch.no_grad():
        data["y"] = model(data["input_ids"]).argmax(-1)
    torch.save(data, tmp_path / "search.pt")
    (tmp_path / "task.yaml").write_text(
        f"legoc: 1\nname: tiny-{family}\ndata:\n  search: search.pt\nmetric: kl\nkeep: 0.9\n"
        f"search:\n  method: {method}\n  budget: 40\n"
    )
    out = tmp_path / "block.onnx"
    result = api.extract(
        tmp_path / "model.pt", tmp_path / "task.yaml", out, arch=f"{tmp_path / 'arch.py'}:build"
    )
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    return result, json.loads(meta["legoc.rationale"])


@pytest.mark.parametrize("family,method", [("llama", "greedy"), ("phi3", "mask")])
def test_extract_writes_a_parity_checked_block(tmp_path, family, method):
    result, rationale = _extract(tmp_path, family, method)
    assert result.faithfulness >= 0.9
    assert result.parity_max_abs_diff <= 1e-4
    kept, total = rationale["kept"], rationale["total"]
    q, kv, _, n_kv = FAMILIES[family][1:]
    n_rep = HEADS // n_kv
    for layer in range(LAYERS):
        queries = kept[f"m.layers.{layer}.{q}"]
        assert total[f"m.layers.{layer}.{q}"] == (HEADS + (0 if kv else 2 * n_kv)) * HEAD_DIM
        kept_heads = {c // HEAD_DIM for c in queries if c < HEADS * HEAD_DIM}
        if kv:  # the KV projections are prunable modules of their own in kept/total
            keys = kept[f"m.layers.{layer}.{kv[0]}"]
            assert total[f"m.layers.{layer}.{kv[0]}"] == n_kv * HEAD_DIM
            kept_kv = {c // HEAD_DIM for c in keys}
        else:  # fused rows: k heads follow the query rows
            kept_kv = {(c - HEADS * HEAD_DIM) // HEAD_DIM for c in queries}
            kept_kv = {h for h in kept_kv if 0 <= h < n_kv}
        # the dependency: a KV head is kept exactly while one of its query heads is
        assert kept_kv == {h // n_rep for h in kept_heads}


# -- GQA: query heads over shared KV heads -------------------------------------------------
GQA = ["llama", "qwen2", "mistral"]


def _kv_rows(block, family: str, layer: int) -> int:
    name = f"m.layers.{layer}.{FAMILIES[family][2][0]}.weight"
    params = dict(block.gm.named_parameters())
    return params[name].shape[0] if name in params else 0


@pytest.mark.parametrize("family", SHARED_KV)
def test_a_kv_head_goes_when_all_its_query_heads_have_gone(family):
    _, ir = decoder_ir(family)
    kv_name = f"m.layers.0.{FAMILIES[family][2][0]}"
    first, second = head_groups(ir, family, 0)[:2]  # the two query heads of KV head 0
    assert ir.mask_for([first.index])[kv_name].all()  # one of them left: the KV head stays
    kept = ir.mask_for([first.index, second.index])[kv_name]
    assert not kept[:HEAD_DIM].any() and kept[HEAD_DIM:].all()  # both gone: it goes
    with pytest.raises(ValueError, match="follows groups"):  # never removed on its own
        ir.mask_for([kv_groups(ir, family, 0)[0].index])


@pytest.mark.parametrize("family", GQA)
def test_uneven_groups_slice_to_a_gather_of_the_kept_kv_heads(family):
    _, ir = decoder_ir(family)
    layer0, layer1 = head_groups(ir, family, 0), head_groups(ir, family, 1)
    # layer 0: one query head of KV head 0 gone (it stays); layer 1: both of KV head 1 gone
    _, block = _sliced_vs_masked(family, [layer0[0].index, layer1[2].index, layer1[3].index])
    assert _kv_rows(block, family, 0) == 2 * HEAD_DIM
    assert _kv_rows(block, family, 1) == HEAD_DIM
    gathers = [n for n in block.gm.graph.nodes if n.target is ops.gather_heads]
    index = [get_attr_tensor(block.gm, n.args[2].target).tolist() for n in gathers]
    # layer 0: query heads 1, 2, 3 read KV heads 0, 1, 1; layer 1: heads 0, 1 read KV head 0
    assert index == [[0, 1, 1], [0, 1, 1], [0, 0], [0, 0]]  # k then v, per layer
    for node in block.gm.graph.nodes:  # every attention reads its KV heads through them
        if node.target is F.scaled_dot_product_attention:
            assert [a.target for a in node.args[1:3]] == [ops.gather_heads] * 2


@pytest.mark.parametrize("family", GQA)
def test_random_kept_query_heads_slice_to_the_masked_model(family):
    _, ir = decoder_ir(family)
    heads = [g.index for layer in range(LAYERS) for g in head_groups(ir, family, layer)]
    removed = sorted(np.random.default_rng(7).choice(heads, size=5, replace=False).tolist())
    _, block = _sliced_vs_masked(family, removed)
    kept_kv = sum(_kv_rows(block, family, layer) for layer in range(LAYERS)) // HEAD_DIM
    n_rep = HEADS // FAMILIES[family][4]
    expected = {  # KV heads with a query head left
        (h // n_rep, layer)
        for layer in range(LAYERS)
        for h, g in enumerate(head_groups(ir, family, layer))
        if g.index not in removed
    }
    assert kept_kv == len(expected)


def test_a_gqa_block_with_uneven_groups_exports_with_parity(tmp_path):
    _, ir = decoder_ir("llama")
    layer0 = head_groups(ir, "llama", 0)
    scorer = Scorer(ir, Split("search", {"input_ids": tokens(48, 3)}, None), METRICS["kl"], "mean")
    masked = ir.with_kept(ir.mask_for([layer0[0].index, layer0[3].index]))
    masked.ablation = dict(scorer.values)
    block = parse_pipeline(BLOCK_PIPELINE).run(masked).ir
    split = Split("search", {"input_ids": tokens(16, 5)}, None)
    diff = export_block(block, masked_model(masked), split, tmp_path / "block.onnx", {})
    assert diff <= PARITY_TOLERANCE
    ops_used = {node.op_type for node in onnx.load(tmp_path / "block.onnx").graph.node}
    assert "Gather" in ops_used
