"""The vocabulary and the one caption tokeniser: part of every model, needed to serve and to train."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """The one caption cleaner: lowercase, keep runs of letters and digits, drop the rest.

    "A dog's ball, red." -> ["a", "dog", "s", "ball", "red"]. References and
    generated captions are both tokenised this way before BLEU is computed.
    """
    return _TOKEN.findall(text.lower())


class Vocabulary:
    """Words <-> ids. Ids 0-3 are <pad>, <start>, <end>, <unk>. Saved as plain JSON."""

    def __init__(self, words: list[str]):
        if list(words[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"a vocabulary must start with {SPECIALS}")
        if len(set(words)) != len(words):
            raise ValueError("a vocabulary cannot hold a word twice")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, captions: list[list[str]], min_count: int = 1) -> "Vocabulary":
        counts = Counter(w for c in captions for w in c)
        kept = sorted((w for w, n in counts.items() if n >= min_count and w not in SPECIALS),
                      key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.index.get(w, self.unk_id) for w in tokens]

    def decode(self, ids) -> list[str]:
        out = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i not in (self.pad_id, self.start_id):
                out.append(self.words[i])
        return out

    def to_json(self) -> str:
        return json.dumps({"words": self.words}, indent=0)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        return cls(json.loads(Path(path).read_text())["words"])
