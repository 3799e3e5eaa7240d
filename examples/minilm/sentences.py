"""Templated topic sentences in two vocabularies.

`search` and `iid` use the first vocabulary (different random draws); `paraphrase` uses
synonyms and sentence shapes the search never sees: the true task is the topic, not the words.
"""

from __future__ import annotations

import random

SEARCH_VOCAB = {
    "sports": {
        "templates": [
            "the {a} won the {b} last night",
            "our {a} played a great {b}",
            "the {a} lost the {b} again",
            "fans cheered as the {a} scored in the {b}",
        ],
        "a": ["team", "club", "striker", "goalkeeper", "coach"],
        "b": ["match", "game", "final", "tournament", "league"],
    },
    "food": {
        "templates": [
            "the {a} cooked a tasty {b}",
            "we ate {b} made by the {a}",
            "this {b} from the {a} was delicious",
            "the {a} served warm {b} for dinner",
        ],
        "a": ["chef", "cook", "baker", "restaurant", "kitchen"],
        "b": ["soup", "pasta", "bread", "cake", "salad"],
    },
    "weather": {
        "templates": [
            "heavy {a} is expected {b}",
            "the forecast says {a} {b}",
            "there was a lot of {a} {b}",
            "expect strong {a} across the region {b}",
        ],
        "a": ["rain", "snow", "wind", "fog", "sunshine"],
        "b": ["tomorrow", "tonight", "this weekend", "in the morning", "all week"],
    },
    "technology": {
        "templates": [
            "the new {a} has a faster {b}",
            "engineers released an update for the {a} {b}",
            "my {a} needs a better {b}",
            "the company built a {a} with a smart {b}",
        ],
        "a": ["phone", "laptop", "computer", "tablet", "server"],
        "b": ["processor", "chip", "software", "battery", "screen"],
    },
}

PARAPHRASE_VOCAB = {
    "sports": {
        "templates": [
            "yesterday the {a} triumphed in the {b}",
            "a thrilling {b} ended with the {a} on top",
            "supporters celebrated after the {a} took the {b}",
        ],
        "a": ["squad", "side", "athletes", "players", "forward"],
        "b": ["championship", "fixture", "cup", "derby", "season opener"],
    },
    "food": {
        "templates": [
            "a delicious {b} was prepared by the {a}",
            "for lunch the {a} offered fresh {b}",
            "i loved the {b} that the {a} made",
        ],
        "a": ["bistro", "caterer", "grandmother", "diner", "pastry shop"],
        "b": ["noodles", "stew", "pie", "sandwiches", "curry"],
    },
    "weather": {
        "templates": [
            "meteorologists predict {a} {b}",
            "brace yourself for {a} {b}",
            "it will be a day of {a} {b}",
        ],
        "a": ["showers", "storms", "drizzle", "heat", "blizzards"],
        "b": ["later today", "on sunday", "overnight", "next week", "by the afternoon"],
    },
    "technology": {
        "templates": [
            "the latest {a} ships with an upgraded {b}",
            "developers improved the {b} of this {a}",
            "my old {a} got a new {b}",
        ],
        "a": ["smartphone", "notebook", "gadget", "device", "desktop"],
        "b": ["firmware", "memory", "graphics card", "operating system", "camera"],
    },
}


def sentences(vocab: dict, per_topic: int, seed: int) -> tuple[list[str], list[int]]:
    """`per_topic` sentences per topic, drawn with replacement from templates x fillers."""
    rng = random.Random(seed)
    texts, labels = [], []
    for label, topic in enumerate(vocab.values()):
        for _ in range(per_topic):
            template = rng.choice(topic["templates"])
            texts.append(template.format(a=rng.choice(topic["a"]), b=rng.choice(topic["b"])))
            labels.append(label)
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [labels[i] for i in order]
