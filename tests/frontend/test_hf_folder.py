"""A Hugging Face folder (save_pretrained: config.json + safetensors + tokenizer) as MODEL and
.jsonl text splits: extracted end to end with no Python file of the user's."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from typer.testing import CliRunner

from legoc.cli.app import app
from legoc.frontend.load import load_model
from tests.helpers import assert_one_error_line

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = ["the", "a", "ball", "game", "team", "goal", "soup", "bread", "cake", "rain", "snow"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_tokenizer():
    """A WordPiece tokenizer over WORDS, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate([*SPECIALS, *WORDS])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=24,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def sentences(seed: int, n: int) -> list[str]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 7, (n,), generator=gen)
    return [
        " ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (int(k),), generator=gen))
        for k in lengths
    ]


def write_folder_task(folder: Path) -> tuple[Path, Path]:
    """A random-init BERT classifier saved with its tokenizer, .jsonl splits labelled with its
    own predictions (so the full model scores 1.0), and a spec."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(SPECIALS) + len(WORDS),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=24,
        num_labels=3,
    )
    model = transformers.BertForSequenceClassification(config).eval()
    tokenizer = tiny_tokenizer()
    model_dir = folder / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    splits = {"search": sentences(1, 48), "iid": sentences(2, 32)}
    longest = max(len(tokenizer(t)["input_ids"]) for texts in splits.values() for t in texts)
    for name, texts in splits.items():
        batch = tokenizer(texts, padding="max_length", max_length=longest, return_tensors="pt")
        with torch.no_grad():
            labels = model(**batch).logits.argmax(-1).tolist()
        lines = [json.dumps({"text": t, "label": y}) for t, y in zip(texts, labels, strict=True)]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    spec = folder / "task.yaml"
    spec.write_text(
        "legoc: 1\nname: folder-topics\ndata:\n  search: search.jsonl\n  eval:\n"
        "    iid: iid.jsonl\nmetric: accuracy\nkeep: 0.9\nsearch:\n  method: attribution\n"
        "  budget: 10\n"
    )
    return model_dir, spec


def test_folder_and_jsonl_extract_end_to_end(tmp_path):
    model_dir, spec = write_folder_task(tmp_path)
    out = tmp_path / "block.onnx"
    result = CliRunner().invoke(
        app, ["extract", str(model_dir), "--task", str(spec), "-o", str(out), "--json", "-q"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["scores"]["search"]["metric_full"] == 1.0  # labels are its predictions
    assert summary["faithfulness"] >= 0.9
    assert summary["parity_max_abs_diff"] <= 1e-4
    block = onnx.load(str(out))
    names = [i.name for i in block.graph.input]
    assert names == ["input_ids", "attention_mask"]
    meta = {p.key: p.value for p in block.metadata_props}
    assert meta["legoc.task"] == "folder-topics"
    assert (
        "bert.encoder.layer.0.attention.self.query" in json.loads(meta["legoc.rationale"])["total"]
    )


def test_folder_class_from_config_or_flag(tmp_path):
    model_dir, _ = write_folder_task(tmp_path)
    loaded = load_model(model_dir)
    assert type(loaded.module).__name__ == "BertForSequenceClassification"
    assert loaded.kind == "hf-folder" and loaded.tokenizer is not None
    as_base = load_model(model_dir, hf_class="AutoModel")
    assert type(as_base.module).__name__ == "BertModel"
    assert loaded.sha256 == load_model(model_dir).sha256


@pytest.mark.parametrize(
    "change, flag, message",
    [
        ("bin", [], "safetensors only"),
        ("no-class", [], "--hf-class"),
        (None, ["--hf-class", "NoSuchModel"], "not a transformers model class"),
        ("text-no-tokenizer", [], "needs a tokenizer"),
    ],
)
def test_folder_refusals_are_one_line(tmp_path, change, flag, message):
    model_dir, spec = write_folder_task(tmp_path)
    if change == "bin":
        for weights in model_dir.glob("*.safetensors"):
            weights.unlink()
    elif change == "no-class":
        config = json.loads((model_dir / "config.json").read_text())
        config.pop("architectures")
        (model_dir / "config.json").write_text(json.dumps(config))
    elif change == "text-no-tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (model_dir / name).unlink(missing_ok=True)
    out = tmp_path / "block.onnx"
    result = CliRunner().invoke(
        app, ["extract", str(model_dir), "--task", str(spec), "-o", str(out), *flag]
    )
    assert result.exit_code == 2, result.output
    assert_one_error_line(result, (message,))
    assert not out.exists()
