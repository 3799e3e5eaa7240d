"""Text splits: a `.jsonl` file of {"text": ..., "label": ...} lines (or a pair: "text" and
"text_pair"), tokenized at load with the model folder's tokenizer.

Padding rule: every split of a task is padded (on the tokenizer's side, with its pad token) to
one length, the longest tokenized text over all the task's text splits, capped at the model's
limit (the tokenizer's `model_max_length`); longer texts are truncated to that cap. The
attention mask marks the real tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from legoc.errors import LegocError

TEXT_KEYS = ("text", "text_pair", "label")
NO_LIMIT = 1_000_000  # tokenizers without a length limit report a huge model_max_length


@dataclass(frozen=True)
class TextRows:
    texts: list[str]
    pairs: list[str] | None
    labels: list[int]


def is_text_split(path: Path) -> bool:
    """A JSON-lines file: its first non-blank byte opens an object."""
    with path.open("rb") as handle:
        head = handle.read(64).lstrip()
    return head[:1] == b"{"


def read_text_split(path: Path, label: str) -> TextRows:
    texts, pairs, labels = [], [], []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{label}: {path}, line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LegocError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise LegocError(f"{where}: must be a JSON object with text and label")
            unknown = sorted(set(row) - set(TEXT_KEYS))
            if unknown:
                raise LegocError(f"{where}: unknown key(s) {unknown}; a row has {TEXT_KEYS}")
            text, pair, y = row.get("text"), row.get("text_pair"), row.get("label")
            if not isinstance(text, str):
                raise LegocError(f"{where}: `text` must be a string")
            if not isinstance(y, int) or isinstance(y, bool):
                raise LegocError(f"{where}: `label` must be an integer class index")
            if pair is not None and not isinstance(pair, str):
                raise LegocError(f"{where}: `text_pair` must be a string")
            if texts and (pair is None) != (not pairs):
                raise LegocError(f"{where}: give `text_pair` on every row or on none")
            texts.append(text)
            labels.append(y)
            if pair is not None:
                pairs.append(pair)
    if not texts:
        raise LegocError(f"{label}: {path} holds no rows")
    return TextRows(texts, pairs or None, labels)


def _encode(tokenizer, rows: TextRows, **kwargs):
    return tokenizer(rows.texts, rows.pairs, **kwargs)


def text_length(tokenizer, splits: dict[str, TextRows]) -> int:
    """The one length every split is padded to (see the module's padding rule)."""
    limit = getattr(tokenizer, "model_max_length", None) or NO_LIMIT
    longest = max(
        max(len(ids) for ids in _encode(tokenizer, rows, truncation=False)["input_ids"])
        for rows in splits.values()
    )
    return min(longest, limit) if limit < NO_LIMIT else longest


def encode_text(
    tokenizer, rows: TextRows, length: int, input_names: list[str]
) -> dict[str, torch.Tensor]:
    """The split as tensors: the model's inputs (padded to `length`) and `y`."""
    batch = _encode(
        tokenizer,
        rows,
        padding="max_length",
        truncation=True,
        max_length=length,
        return_tensors="pt",
    )
    tensors = {name: batch[name] for name in input_names if name in batch}
    tensors["y"] = torch.tensor(rows.labels, dtype=torch.long)
    return tensors
