"""For teachers: decoding shown step by step, and the three designs captioning the same photo.

:func:`step_through` turns the caption beam search returned into one
:class:`Step` per decoding step: the words so far, the word chosen, where the
model looked for it, the gate beta, and the five likeliest next words. It
reads only what beam search recorded for that caption, so it agrees with it
exactly. :func:`compare` captions one photo with several model folders
(the attention model and the seed designs, inject and merge).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .decoding import Caption

DESIGNS = {
    "attention": "Soft attention (Show, Attend and Tell): looks at the 196 regions anew for every word",
    "inject": "Inject (Show and Tell): the photo sets the LSTM's first state, then words follow",
    "merge": "Merge: an LSTM reads the words so far; the photo is added just before each word is chosen",
}


@dataclass
class Step:
    index: int  # 0-based decoding step
    words_so_far: list[str]  # the caption before this step
    word: str  # the word chosen here ("<end>" when the caption ends)
    attention: np.ndarray | None  # (G, G) where the model looked for this word; None without attention or at <end>
    gate: float | None  # beta: how much of the attended context reached the LSTM (None without attention)
    top: list[tuple[str, float]]  # the five likeliest words at this step, with probabilities

    @property
    def chosen_probability(self) -> float | None:
        return next((p for w, p in self.top if w == self.word), None)


def step_through(caption: Caption) -> list[Step]:
    """One :class:`Step` per decoding step of ``caption`` (decoded with ``with_steps=True``).

    There are ``len(words)`` steps, plus one for ``<end>`` if the caption ended.
    """
    if not caption.steps:
        raise ValueError("this caption was decoded without its steps: decode it with with_steps=True")
    words = caption.words + (["<end>"] if caption.ended else [])
    has_map = caption.attention.size > 0
    out = []
    for t, (word, top) in enumerate(zip(words, caption.steps)):
        real = t < len(caption.words)
        out.append(Step(
            index=t, words_so_far=caption.words[:t], word=word,
            attention=caption.attention[t] if has_map and real else None,
            gate=float(caption.gates[t]) if len(caption.gates) and real else None,
            top=list(top)))
    return out


@dataclass
class Comparison:
    name: str  # "attention", "inject" or "merge": the decoder design
    description: object  # the captioner.pipeline.Description of the photo
    test_scores: dict = field(default_factory=dict)  # {"bleu4": ..., "cider": ...} on Flickr8k test, if recorded
    decoders: int = 1  # more than one: an ensemble of decoders of this design (config.json "ensemble")

    @property
    def seconds(self) -> float:
        return sum(self.description.seconds.values())

    @property
    def summary(self) -> str:
        design = DESIGNS.get(self.name, self.name)
        if self.decoders > 1:
            return (f"{design}; {self.decoders} such decoders, trained apart, choose each word together "
                    "(the mean of their word probabilities)")
        return design


def compare(captioners: dict, photo, beam_size: int | None = None) -> list[Comparison]:
    """Caption one photo with each captioner (name -> :class:`~captioner.pipeline.Captioner`), in order.

    Each caption is timed whole (reading, encoder, decoder), as a visitor would wait for it.
    Raises :class:`~captioner.image.ImageError` for a photo that cannot be read.
    """
    out = []
    for name, captioner in captioners.items():
        described = captioner.describe(photo, beam_size=beam_size)
        out.append(Comparison(name, described, test_scores(captioner.metrics, described.beam_size),
                              captioner.config.ensemble))
    return out


def test_scores(metrics: dict, beam_size: int) -> dict:
    """BLEU-4 and CIDEr-D on Flickr8k test at ``beam_size`` (or the shipped width) from a folder's metrics.json."""
    table = metrics.get("test", {})
    row = table.get(str(beam_size)) or table.get(str(metrics.get("shipped_beam_size")), {})
    return {k: row[k] for k in ("bleu1", "bleu4", "cider") if k in row}
