"""Blocks of any length: a tiny BERT captured with a dynamic token axis takes 8 to 64 tokens.

The model is a randomly initialised Hugging Face BERT (64 positions) searched on 16-token data;
the block must give the same outputs on the same sentences padded (or cut) to other lengths, in
onnxruntime, and say which lengths it was checked at.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from legoc import api
from legoc.frontend.capture import capture
from legoc.ir.core import build_ir
from legoc.ir.masking import masked_model
from legoc.ir.tokens import SEQUENCE, with_length
from legoc.passes.registry import parse_pipeline
from legoc.passes.rewrite import BLOCK_PIPELINE
from legoc.scoring.scorer import Scorer
from legoc.task.metrics import METRICS
from legoc.task.spec import Split
from tests.helpers import assert_float_close

transformers = pytest.importorskip("transformers")

VOCAB, HIDDEN, POSITIONS, TOKENS = 40, 32, 64, 16
NAMES = ["input_ids", "attention_mask"]


class PositionedBert(nn.Module):
    """A 2-layer BERT with 64 positions and a mean-pooled head (examples/minilm's shape)."""

    def __init__(self):
        super().__init__()
        config = transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=48,
            max_position_embeddings=POSITIONS,
        )
        self.bert = transformers.BertModel(config, add_pooling_layer=False)
        self.head = nn.Linear(HIDDEN, 3)

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        real = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * real).sum(1) / real.sum(1))


def model() -> PositionedBert:
    torch.manual_seed(0)
    return PositionedBert().eval()


def sentences(n: int, seed: int, longest: int = 8, width: int = TOKENS) -> dict:
    """`n` rows of 3..`longest` real tokens, padded to `width`."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, width), generator=gen)
    lengths = torch.randint(3, longest + 1, (n,), generator=gen)
    mask = (torch.arange(width) < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def run_block(path, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {n: inputs[n].numpy() for n in NAMES})[0]


def test_capture_leaves_the_token_axis_dynamic_up_to_the_position_limit():
    example = sentences(2, 0)
    gm = capture(model(), example, NAMES)
    assert gm.meta[SEQUENCE] == {"inputs": NAMES, "min": 2, "max": POSITIONS}


def test_a_model_that_fixes_the_length_is_captured_at_it_and_says_why():
    class Flattening(nn.Module):  # a linear layer over all positions: one length only
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, 4)
            self.mix = nn.MultiheadAttention(4, 1, batch_first=True)  # torch.export path
            self.head = nn.Linear(4 * TOKENS, 3)

        def forward(self, input_ids):
            x = self.embed(input_ids)
            x = self.mix(x, x, x, need_weights=False)[0]
            return self.head(x.reshape(x.shape[0], -1))

    example = {"input_ids": sentences(2, 0)["input_ids"]}
    gm = capture(Flattening().eval(), example, ["input_ids"])
    lengths = gm.meta[SEQUENCE]
    assert (lengths["min"], lengths["max"]) == (TOKENS, TOKENS)
    assert lengths["fixed"]  # the exporter's reason, one line


def test_the_block_gives_the_same_outputs_at_8_16_32_and_64_tokens(tmp_path):
    full = model()
    torch.save(full.state_dict(), tmp_path / "model.pt")
    (tmp_path / "arch.py").write_text(
        "from tests.frontend.test_sequence_lengths import model\n\ndef make():\n"
        "    return model()\n"
    )
    data = sentences(48, 1)
    with torch.no_grad():
        data["y"] = full(data["input_ids"], data["attention_mask"]).argmax(-1)
    torch.save(data, tmp_path / "search.pt")
    (tmp_path / "task.yaml").write_text(
        "legoc: 1\nname: any-length\ndata:\n  search: search.pt\nmetric: accuracy\nkeep: 0.9\n"
        "search:\n  method: greedy\n  budget: 12\n"
    )
    out = tmp_path / "block.onnx"
    api.extract(tmp_path / "model.pt", tmp_path / "task.yaml", out, arch=f"{tmp_path}/arch.py:make")
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    meta[SEQUENCE] = json.loads(meta[SEQUENCE])
    assert meta[SEQUENCE]["min"] == 2 and meta[SEQUENCE]["max"] == POSITIONS
    assert meta[SEQUENCE]["checked"] == [8, 16, 32, 64]
    fresh = sentences(20, 2)  # at most 8 real tokens: the same sentences at every length
    at_search = run_block(out, fresh)
    with torch.no_grad():
        full_at_search = full(*[fresh[n] for n in NAMES]).numpy()
    for length in (8, 32, 64):
        padded = with_length(fresh, NAMES, length)
        got = run_block(out, padded)
        assert_float_close(got, at_search, steps=64)
        assert (got.argmax(-1) == at_search.argmax(-1)).all()
        with torch.no_grad():  # the full model is length-invariant on them too
            full_here = full(*[padded[n] for n in NAMES]).numpy()
        assert_float_close(full_here, full_at_search, steps=64)


def test_mean_per_position_folds_exactly_at_shorter_and_longer_lengths():
    ir = build_ir(capture(model(), sentences(2, 0), NAMES), NAMES, sentences(2, 0))
    search = Split("search", sentences(64, 3, TOKENS), None)
    scorer = Scorer(ir, search, METRICS["kl"], "mean-per-position")
    ffn = "bert.encoder.layer.1.intermediate.dense"
    assert tuple(scorer.values[ffn].shape) == (TOKENS + 1, 48)  # positions, then the tail
    overall = Scorer(ir, search, METRICS["kl"], "mean").values[ffn]
    assert_float_close(scorer.values[ffn][-1], overall)  # past the search length: the mean
    assert scorer.values["bert.encoder.layer.0.attention.self.value"].dim() == 1  # heads: one
    neurons = [g.index for g in ir.groups if any(m[0] == ffn for m in g.members)]
    heads = [g.index for g in ir.groups if "attention head" in g.coupled_by]
    masked = ir.with_kept(ir.mask_for(neurons[::2] + heads[:3]))
    masked.ablation = dict(scorer.values)
    result = parse_pipeline(BLOCK_PIPELINE).run(masked)
    assert dict(result.reports)["fold-ablations"]["constants_added"] >= 1  # a map over positions
    oracle = masked_model(masked)
    for length in (5, TOKENS, 40):  # real tokens up to the length, past the search data's
        inputs = with_length(sentences(6, length, length, max(length, TOKENS)), NAMES, length)
        with torch.no_grad():
            want = oracle(*[inputs[n] for n in NAMES])
            got = result.ir.gm(*[inputs[n] for n in NAMES])
        assert_float_close(got, want, steps=64)


def test_longer_lengths_check_fewer_rows_within_the_token_cap():
    """At a model's position limit (GPT-2: 1024) the parity check would hold rows x heads x
    length² scores: rows shrink so each length checks at most EXTRA_TOKENS tokens, one row
    at least, and the split's own length keeps every row."""
    from legoc.export.lengths import EXTRA_ROWS, EXTRA_TOKENS, resized_split

    ids = torch.arange(40 * 8).reshape(40, 8) % 50
    split = Split("search", {"input_ids": ids}, torch.zeros(40, dtype=torch.long))
    assert resized_split(split, ["input_ids"], 8) is split
    for length in (4, 16, EXTRA_TOKENS // 4, EXTRA_TOKENS, 4 * EXTRA_TOKENS):
        part = resized_split(split, ["input_ids"], length)
        rows, tokens = part.inputs["input_ids"].shape
        assert tokens == length
        assert rows == max(1, min(EXTRA_ROWS, EXTRA_TOKENS // length))
        shared = min(8, length)
        assert torch.equal(part.inputs["input_ids"][:, :shared], ids[:rows, :shared])
