"""Wording a caption by the model's own confidence, so that listeners do not over-trust it.

MacLeod et al. (CHI 2017) found that blind users trusted wrong captions when
they were stated flatly, and less so when the wording admitted doubt.
The thresholds are chosen on the dev split and stored in ``config.json``.

The model says either a clause ("a man is sitting on a bench") or a noun
phrase ("a dog running on the grass"). Each hedge opens with a sentence
adverb ("Probably", "Possibly", "perhaps"), which reads as English before
either; the old "it may be a man is sitting" did not. A caption that loops
("white and white and white") is said once, and one that stops mid-phrase
("people sitting on a blue") loses its dangling words.
"""
from __future__ import annotations

from .config import ModelConfig
from .decoding import Caption
from .grammar import dangling

OPENINGS = {"probably": "Probably", "possibly": "Possibly", "not sure": "I'm not sure, but perhaps"}


def without_repeats(words: list[str], longest: int = 4) -> list[str]:
    """The caption with a phrase said twice in a row said once ("white and white and white" -> "white",
    "a red car car" -> "a red car").

    A decoder that runs to its length limit often loops like this; a listener hears noise.
    """
    words = list(words)
    changed = True
    while changed:
        changed = False
        for i in range(len(words) - 2):  # "white and white" -> "white"
            if words[i] == words[i + 2] and words[i + 1] in ("and", "or"):
                del words[i + 1:i + 3]
                changed = True
                break
        for n in range(1, longest + 1):
            i = 0
            while i + 2 * n <= len(words):
                if words[i:i + n] == words[i + n:i + 2 * n]:
                    del words[i + n:i + 2 * n]
                    changed = True
                else:
                    i += 1
    return words


def whole_phrase(words: list[str]) -> list[str]:
    """The caption said once and ended whole: repeats folded, dangling words dropped from its end.

    "people dressed in white and white and white and" -> "people dressed in white";
    "sitting on a blue" -> "sitting". Never returns an empty caption.
    """
    words = without_repeats(words)
    while (cut := dangling(words)) and len(words) > cut:
        words = words[:-cut]
    return words


def confidence_band(caption: Caption, config: ModelConfig) -> str:
    """"probably", "possibly" or "not sure", from the per-word log-probability."""
    if caption.mean_log_prob >= config.hedge_sure:
        return "probably"
    if caption.mean_log_prob >= config.hedge_possible:
        return "possibly"
    return "not sure"


def hedge(caption: Caption, config: ModelConfig) -> str:
    """The sentence a listener hears: "Probably a dog running on the grass."

    "Possibly two people are walking on the beach.", "I'm not sure, but perhaps a man is climbing a rock."
    """
    text = " ".join(whole_phrase(caption.words))
    return f"{OPENINGS[confidence_band(caption, config)]} {text}."
