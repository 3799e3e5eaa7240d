"""Build the MiniLM example: tokenise the topic sentences, train the head, write the files.

Run from anywhere:  python examples/minilm/build.py   (about a minute on 2 cores)
Writes model.pt (the pretrained encoder's weights plus the trained head, ~90 MB, not in git)
and data/{search,iid,paraphrase}.pt (token ids, attention masks, labels). Deterministic.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything comes from the installed package

import torch  # noqa: E402
from model import TOPICS, encoder_dir, make_model  # noqa: E402 - same folder
from safetensors.torch import load_file  # noqa: E402
from sentences import PARAPHRASE_VOCAB, SEARCH_VOCAB, sentences  # noqa: E402

HERE = Path(__file__).resolve().parent
MAX_TOKENS = 16  # every split is padded to this length: the block's token axis is fixed
SPLITS = {  # name: (vocabulary, sentences per topic, seed)
    "train": (SEARCH_VOCAB, 60, 1),
    "search": (SEARCH_VOCAB, 60, 2),
    "iid": (SEARCH_VOCAB, 40, 3),
    "paraphrase": (PARAPHRASE_VOCAB, 40, 4),
}
HEAD_STEPS, HEAD_LR = 300, 0.05


def tokenise(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    batch = tokenizer(
        texts, padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
    )
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def main() -> None:
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir()))
    model = make_model().eval()
    weights = load_file(str(encoder_dir() / "model.safetensors"))
    missing, unexpected = model.encoder.load_state_dict(weights, strict=False)
    assert not missing and set(unexpected) <= {
        "embeddings.position_ids",
        "pooler.dense.weight",
        "pooler.dense.bias",
    }, (missing, unexpected)

    data = {}
    for name, (vocab, per_topic, seed) in SPLITS.items():
        texts, labels = sentences(vocab, per_topic, seed)
        data[name] = {**tokenise(tokenizer, texts), "y": torch.tensor(labels)}

    with torch.no_grad():
        train = data["train"]
        features = model.embed(train["input_ids"], train["attention_mask"])
    head = model.head
    optimiser = torch.optim.Adam(head.parameters(), lr=HEAD_LR)
    for _ in range(HEAD_STEPS):  # the encoder stays frozen: only the topic head learns
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(features), train["y"])
        loss.backward()
        optimiser.step()

    (HERE / "data").mkdir(exist_ok=True)
    for name in ("search", "iid", "paraphrase"):
        torch.save(data[name], HERE / "data" / f"{name}.pt")
        with torch.no_grad():
            logits = model(data[name]["input_ids"], data[name]["attention_mask"])
        accuracy = float((logits.argmax(-1) == data[name]["y"]).float().mean())
        print(f"{name:>10}: {len(data[name]['y'])} sentences, accuracy {accuracy:.3f}")
    torch.save(model.state_dict(), HERE / "model.pt")
    print(
        f"topics {list(TOPICS)}; wrote model.pt and data/ in {time.perf_counter() - started:.0f}s"
    )


if __name__ == "__main__":
    main()
