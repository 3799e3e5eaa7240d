"""Transformers: heads and MLP neurons as units, captured with torch.export.

Models are tiny randomly initialised Hugging Face BERTs built here (no weights file, no
download); every rewrite is checked against the masked model on fresh token ids.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from legoc import api
from legoc.frontend.load import trace
from legoc.ir.core import build_ir
from legoc.ir.masking import masked_model
from legoc.passes.registry import parse_pipeline
from legoc.passes.rewrite import BLOCK_PIPELINE
from legoc.scoring.scorer import Scorer
from legoc.task.metrics import METRICS
from legoc.task.spec import Split

transformers = pytest.importorskip("transformers")

VOCAB, HIDDEN, HEADS, LAYERS, FFN, TOKENS = 40, 32, 4, 2, 48, 9
HEAD_DIM = HIDDEN // HEADS


class TinyBertClassifier(nn.Module):
    """A BERT encoder with a mean-pooled linear head (the shape of examples/minilm)."""

    def __init__(self, returns: str = "tensor"):
        super().__init__()
        config = transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=FFN,
            max_position_embeddings=16,
        )
        self.bert = transformers.BertModel(config, add_pooling_layer=False)
        self.head = nn.Linear(HIDDEN, 3)
        self.returns = returns

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        real = attention_mask.unsqueeze(-1).to(hidden.dtype)
        logits = self.head((hidden * real).sum(1) / real.sum(1))
        if self.returns == "tuple":
            return hidden, logits
        if self.returns == "dict":
            return {"pooled": hidden[:, 0], "logits": logits}
        return logits


def token_batch(n: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, TOKENS), generator=gen)
    lengths = torch.randint(3, TOKENS + 1, (n,), generator=gen)
    mask = (torch.arange(TOKENS) < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def bert(returns: str = "tensor") -> TinyBertClassifier:
    torch.manual_seed(0)
    return TinyBertClassifier(returns).eval()


def bert_ir(model: nn.Module | None = None, model_output: str | None = None):
    model = model or bert()
    names = ["input_ids", "attention_mask"]
    example = token_batch(2, 0)
    return build_ir(trace(model, names, example, model_output), names, example)


def heads_of(ir, layer: int) -> list[int]:
    query = f"bert.encoder.layer.{layer}.attention.self.query"
    return sorted({g.index for g in ir.groups if any(m[0] == query for m in g.members)})


def rewritten_vs_masked(ir, removed: list[int], seed: int = 7) -> tuple[float, object]:
    """Mean-ablate `removed`, run the rewrite pipeline, compare with the masked model."""
    data = token_batch(64, 3)
    split = Split("search", data, None)
    scorer = Scorer(ir, split, METRICS["kl"], "mean")
    masked = ir.with_kept(ir.mask_for(removed))
    masked.ablation = dict(scorer.values)
    block = parse_pipeline(BLOCK_PIPELINE).run(masked).ir
    fresh = token_batch(11, seed)
    args = [fresh["input_ids"], fresh["attention_mask"]]
    with torch.no_grad():
        want = masked_model(masked)(*args)
        got = block.gm(*args)
    return float((want - got).abs().max()), block


def test_heads_are_units_coupling_query_key_and_value():
    ir = bert_ir()
    for layer in range(LAYERS):
        groups = heads_of(ir, layer)
        assert len(groups) == HEADS
        for g in groups:
            members = ir.groups[g].members
            assert {m[0].rsplit(".", 1)[1] for m in members} == {"query", "key", "value"}
            assert len(members) == 3 * HEAD_DIM
            assert ir.groups[g].frozen is None
            # q, k, v rows and the output projection's columns
            assert ir.groups[g].params == 3 * HEAD_DIM * (HIDDEN + 1) + HEAD_DIM * HIDDEN
    ffn = "bert.encoder.layer.0.intermediate.dense"
    neurons = [g for g in ir.groups if any(m[0] == ffn for m in g.members)]
    assert len(neurons) == FFN and all(len(g.members) == 1 and g.frozen is None for g in neurons)


def test_removing_some_heads_and_neurons_slices_weights_exactly():
    ir = bert_ir()
    ffn = "bert.encoder.layer.1.intermediate.dense"
    neurons = [g.index for g in ir.groups if any(m[0] == ffn for m in g.members)]
    removed = heads_of(ir, 0)[:3] + heads_of(ir, 1)[1:2] + neurons[::2]
    diff, block = rewritten_vs_masked(ir, removed)
    assert diff <= 1e-5
    query = block.gm.get_parameter("bert.encoder.layer.0.attention.self.query.weight")
    assert tuple(query.shape) == (HEAD_DIM, HIDDEN)  # one head left in layer 0
    out = block.gm.get_parameter("bert.encoder.layer.0.attention.output.dense.weight")
    assert tuple(out.shape) == (HIDDEN, HEAD_DIM)
    assert block.param_count() < ir.param_count()


def test_a_layer_whose_heads_are_all_removed_drops_out():
    ir = bert_ir()
    diff, block = rewritten_vs_masked(ir, heads_of(ir, 1))
    assert diff <= 1e-5
    names = {name for name, _ in block.gm.named_parameters()}
    assert not any(n.startswith("bert.encoder.layer.1.attention.self.") for n in names)
    attention = [n for n in block.gm.graph.nodes if "scaled_dot_product" in str(n.target)]
    assert len(attention) == 1  # layer 0's only


def test_means_skip_padding():
    ir = bert_ir()
    data = token_batch(32, 5)
    scorer = Scorer(ir, Split("search", data, None), METRICS["kl"], "mean")
    name = "bert.encoder.layer.0.intermediate.dense"
    # the mean over real tokens, computed by hand from the unablated activations
    captured = {}
    node = ir.spaces[name].node

    class Grab(torch.fx.Interpreter):
        def run_node(self, n):
            value = super().run_node(n)
            if n.name == node:
                captured["x"] = value
            return value

    with torch.no_grad():
        Grab(ir.gm).run(data["input_ids"], data["attention_mask"])
    real = data["attention_mask"].bool()
    want = captured["x"][real].mean(0)
    everywhere = captured["x"].reshape(-1, FFN).mean(0)
    assert torch.allclose(scorer.values[name], want, atol=1e-5)
    assert not torch.allclose(scorer.values[name], everywhere, atol=1e-3)


@pytest.mark.parametrize("returns,model_output", [("tuple", "1"), ("dict", None)])
def test_tuple_and_dict_outputs_pick_the_task_tensor(returns, model_output):
    model = bert(returns)
    ir = bert_ir(model, model_output)
    data = token_batch(5, 9)
    with torch.no_grad():
        got = ir.gm(data["input_ids"], data["attention_mask"])
        want = bert()(data["input_ids"], data["attention_mask"])
    assert torch.allclose(got, want, atol=1e-5)


def test_an_unknown_model_output_names_the_structure():
    from legoc.errors import LegocError

    with pytest.raises(LegocError, match=r"--model-output 'hidden'.*\{pooled, logits\}"):
        bert_ir(bert("dict"), "hidden")


def test_extract_end_to_end_from_token_ids(tmp_path):
    """int64 inputs named as the forward arguments, in the data file and in the ONNX block."""
    model = bert()
    with torch.no_grad():  # random init barely moves the logits: kl's gap would be noise
        model.head.weight.mul_(30.0)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    (tmp_path / "arch.py").write_text(
        "from tests.frontend.test_transformers import bert\n\ndef make():\n    return bert()\n"
    )
    data = token_batch(96, 1)
    with torch.no_grad():
        data["y"] = model(data["input_ids"], data["attention_mask"]).argmax(-1)
    torch.save(data, tmp_path / "search.pt")
    (tmp_path / "task.yaml").write_text(
        "legoc: 1\nname: tiny-bert\ndata:\n  search: search.pt\nmetric: kl\nkeep: 0.9\n"
        "search:\n  method: greedy\n  budget: 60\n"
    )
    out = tmp_path / "block.onnx"
    result = api.extract(
        tmp_path / "model.pt", tmp_path / "task.yaml", out, arch=f"{tmp_path / 'arch.py'}:make"
    )
    assert result.faithfulness >= 0.9
    assert result.parity_max_abs_diff <= 1e-4
    block = onnx.load(out)
    inputs = {i.name: i.type.tensor_type.elem_type for i in block.graph.input}
    assert inputs == {"input_ids": onnx.TensorProto.INT64, "attention_mask": onnx.TensorProto.INT64}
    meta = {p.key: p.value for p in block.metadata_props}
    kept = json.loads(meta["legoc.rationale"])["kept"]
    assert "bert.encoder.layer.0.attention.self.query" in kept
    assert np.all(np.diff(kept["bert.encoder.layer.0.intermediate.dense"]) > 0)


class TinyGpt2Classifier(nn.Module):
    """A GPT-2 decoder (fused c_attn Conv1D, causal attention) read at the last token."""

    def __init__(self):
        super().__init__()
        config = transformers.GPT2Config(
            vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=16
        )
        self.gpt = transformers.GPT2Model(config)
        self.head = nn.Linear(HIDDEN, 3)

    def forward(self, input_ids):
        return self.head(self.gpt(input_ids=input_ids).last_hidden_state[:, -1])


def gpt2_ir():
    torch.manual_seed(0)
    model = TinyGpt2Classifier().eval()
    example = {"input_ids": token_batch(2, 0)["input_ids"]}
    return model, build_ir(trace(model, ["input_ids"], example), ["input_ids"], example)


def test_gpt2_fused_projection_heads_and_neurons_slice_exactly():
    model, ir = gpt2_ir()
    attn = "gpt.h.0.attn.c_attn"
    heads = sorted({g.index for g in ir.groups if any(m[0] == attn for m in g.members)})
    assert len(heads) == HEADS
    assert all(len(ir.groups[g].members) == 3 * HEAD_DIM for g in heads)  # q, k, v of a head
    mlp = "gpt.h.1.mlp.c_fc"
    neurons = [g.index for g in ir.groups if any(m[0] == mlp for m in g.members)]
    assert len(neurons) == 4 * HIDDEN and all(ir.groups[g].frozen is None for g in neurons)
    ids = token_batch(64, 3)["input_ids"]
    scorer = Scorer(ir, Split("search", {"input_ids": ids}, None), METRICS["kl"], "mean")
    masked = ir.with_kept(ir.mask_for(heads[1:] + neurons[::3]))
    masked.ablation = dict(scorer.values)
    block = parse_pipeline(BLOCK_PIPELINE).run(masked).ir
    fresh = token_batch(7, 11)["input_ids"]
    with torch.no_grad():
        assert float((masked_model(masked)(fresh) - block.gm(fresh)).abs().max()) <= 1e-5
        full = model(fresh)
        assert torch.allclose(ir.gm(fresh), full, atol=1e-5)  # capture + Conv1D lowering
    c_attn = block.gm.get_parameter("gpt.h.0.attn.c_attn.weight")
    assert tuple(c_attn.shape) == (3 * HEAD_DIM, HIDDEN)  # one head's q, k, v rows


class TinyTorchEncoder(nn.Module):
    """nn.TransformerEncoder (fused in-projection, heads folded into the batch axis by torch)."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        layer = nn.TransformerEncoderLayer(HIDDEN, HEADS, FFN, dropout=0.0, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.head = nn.Linear(HIDDEN, 3)
        self.batch_first = batch_first

    def forward(self, input_ids):
        x = self.embed(input_ids)
        if not self.batch_first:
            return self.head(self.encoder(x.transpose(0, 1)).mean(0))
        return self.head(self.encoder(x).mean(1))


@pytest.mark.parametrize("batch_first", [True, False])
def test_torch_transformer_encoder_heads_are_units(batch_first):
    torch.manual_seed(0)
    model = TinyTorchEncoder(batch_first).eval()
    example = {"input_ids": token_batch(2, 0)["input_ids"]}
    ir = build_ir(trace(model, ["input_ids"], example), ["input_ids"], example)
    fresh = token_batch(7, 11)["input_ids"]
    with torch.no_grad():
        assert torch.allclose(ir.gm(fresh), model(fresh), atol=1e-5)
    attn = "encoder.layers.0.self_attn"
    heads = sorted({g.index for g in ir.groups if any(m[0] == attn for m in g.members)})
    assert len(heads) == HEADS and all(ir.groups[g].frozen is None for g in heads)
    last = "encoder.layers.1.self_attn"
    all_last = sorted({g.index for g in ir.groups if any(m[0] == last for m in g.members)})
    ids = token_batch(64, 3)["input_ids"]
    scorer = Scorer(ir, Split("search", {"input_ids": ids}, None), METRICS["kl"], "mean")
    masked = ir.with_kept(ir.mask_for(heads[:3] + all_last))
    masked.ablation = dict(scorer.values)
    block = parse_pipeline(BLOCK_PIPELINE).run(masked).ir
    with torch.no_grad():
        assert float((masked_model(masked)(fresh) - block.gm(fresh)).abs().max()) <= 1e-5
    in_proj = block.gm.get_parameter("encoder.layers.0.self_attn.in_proj_weight")
    assert tuple(in_proj.shape) == (3 * HEAD_DIM, HIDDEN)
    attention = [n for n in block.gm.graph.nodes if "scaled_dot_product" in str(n.target)]
    assert len(attention) == 1  # layer 1 dropped out


def test_macs_per_row_and_mask_step_rows():
    from legoc.passes.search.masks import MAX_ROWS, MIN_ROWS, STEP_MACS, step_rows

    ir = bert_ir()
    per_layer = 4 * TOKENS * HIDDEN * HIDDEN + 2 * TOKENS * HIDDEN * FFN  # q, k, v, o + MLP
    assert ir.macs_per_row() == LAYERS * per_layer + HIDDEN * 3
    assert step_rows(ir) == MAX_ROWS  # a tiny model: full-size gradient batches

    class Costly:
        def macs_per_row(self):
            return STEP_MACS // 6  # ~MiniLM on 16 tokens

    assert step_rows(Costly()) == MIN_ROWS


def test_model_output_also_picks_from_a_model_fx_can_trace():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 2)

        def forward(self, x):
            return {"first": self.a(x), "second": self.b(x)}

    torch.manual_seed(0)
    model = TwoHeads().eval()
    x = torch.randn(2, 4)
    gm = trace(model, ["x"], {"x": x}, "second")
    assert build_ir(gm, ["x"], {"x": x}).gm(x).shape == (2, 2)
    from legoc.errors import LegocError

    with pytest.raises(LegocError, match="without 'logits'.*--model-output KEY"):
        build_ir(trace(model, ["x"], {"x": x}), ["x"], {"x": x})
