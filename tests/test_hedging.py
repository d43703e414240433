"""Hedged wording: grammatical English for every caption the model says, and no sentence left hanging."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from captioner.config import ModelConfig
from captioner.decoding import Caption
from captioner.grammar import DETERMINERS, RepeatRule, broken_ending, repeats
from captioner.hedging import OPENINGS, confidence_band, hedge, whole_phrase, without_repeats

# The shipped model's captions (beam 3) for the 1,000 Flickr8k dev photos, written by
#   python -m captioner evaluate --data-dir ../shared/flickr8k --split dev --beam-sizes 3 --captions FILE
# (only the caption text is kept here) before its config turned block_repeats on, so about one in ten
# says a thing twice ("a bike on a bike"): harder wording to hedge than what it says now (add
# --no-block-repeats to that command to write them again); and endings that SCST-trained models are
# known to produce.
DEV_CAPTIONS = Path(__file__).resolve().parent / "data" / "dev_captions.txt"
BROKEN = ["a group of people are sitting on a blue", "a man in a red shirt is standing on the",
          "two dogs are playing in", "a woman and", "a boy is jumping into a"]
CONFIG = ModelConfig(hedge_sure=-1.0, hedge_possible=-2.0)


def caption(text: str, mean_log_prob: float) -> Caption:
    words = text.split()
    return Caption(words, np.zeros((len(words), 1, 1)), mean_log_prob * (len(words) + 1), 0.0)


def model_captions() -> list[str]:
    return [line.strip() for line in DEV_CAPTIONS.read_text().splitlines() if line.strip()]


def test_the_list_is_real_model_output():
    captions = model_captions()
    assert len(captions) == 1000 and len(set(captions)) > 300
    assert all(re.fullmatch(r"[a-z0-9]+( [a-z0-9]+)*", c) for c in captions)


@pytest.mark.parametrize("confidence, band", [(-0.5, "probably"), (-1.5, "possibly"), (-3.0, "not sure")])
def test_every_model_caption_is_hedged_grammatically(confidence, band):
    for text in model_captions() + BROKEN:
        cap = caption(text, confidence)
        assert confidence_band(cap, CONFIG) == band
        spoken = hedge(cap, CONFIG)
        opening = OPENINGS[band]
        # A sentence adverb ("Probably", "Possibly", "perhaps") before the caption: English whether the
        # model said a clause ("a man is sitting") or a noun phrase ("a dog running"). The old
        # "it may be a man is sitting" put a clause where a noun phrase belongs.
        assert spoken.startswith(opening + " ") and spoken.endswith(".") and spoken.count(".") == 1, spoken
        assert "may be" not in spoken, spoken
        body = spoken[len(opening) + 1:-1].split()
        assert body and not broken_ending(body), spoken  # no "... on a blue."
        assert body == whole_phrase(text.split()), spoken
        assert not any(body[i:i + n] == body[i + n:i + 2 * n] for n in (1, 2, 3) for i in range(len(body))), spoken
        assert body[0] in DETERMINERS or body[0].endswith("s") or body[0] in ("people", "children"), spoken


def test_what_the_hedge_repairs_in_real_output():
    """Of the shipped model's 1,000 dev captions, 27 repeat themselves ("a white and white dog") and 3 of
    those also hang (loops cut off at the length limit); the hedge repairs exactly those, word for word."""
    captions = [c.split() for c in model_captions()]
    hanging = [c for c in captions if broken_ending(c)]
    looping = [c for c in captions if without_repeats(c) != c]
    assert len(hanging) == 3 and all(c in looping for c in hanging)
    assert 20 <= len(looping) <= 35  # 27: "a white and white dog", "sunglasses and sunglasses", ...
    assert [c for c in captions if whole_phrase(c) != c] == looping
    loop = "a group of people dressed in white and white and white and white and white and white and white and white and"
    assert " ".join(whole_phrase(loop.split())) == "a group of people dressed in white"


@pytest.mark.parametrize("text, whole", [
    ("a group of people are sitting on a blue", "a group of people are sitting"),
    ("two dogs are playing in the", "two dogs are playing"),
    ("a man on a", "a man"),
    ("a woman and", "a woman"),
    ("a woman dressed in white", "a woman dressed in white"),  # a colour after "in" is a whole phrase
    ("a dog running around", "a dog running around"),  # particles may end a sentence
    ("a man sitting down", "a man sitting down"),
    ("the", "the"),  # nothing left to keep: kept as it is
    ("a man in a white shirt and white and white and white uniforms are playing in",
     "a man in a white shirt and white uniforms are playing"),
    ("a dog is is running", "a dog is running"),
    ("a young boy in a blue shirt and a white and white and white and white", "a young boy in a blue shirt"),
    ("a white and white dog is running", "a white dog is running"),
    ("a black and white dog", "a black and white dog"),
])
def test_dangling_words_are_dropped_from_the_end_only(text, whole):
    assert " ".join(whole_phrase(text.split())) == whole
    assert not broken_ending(whole.split()) or whole == "the"


@pytest.mark.parametrize("text, broken", [
    ("a group of people are sitting on a blue", True), ("two dogs are playing in the", True),
    ("a woman and", True), ("a man on", True), ("the", True),
    ("a woman dressed in white", False), ("a dog running around", False), ("a man sitting down", False),
    ("a black and white dog", False),
])
def test_broken_endings(text, broken):
    assert broken_ending(text.split()) == broken


def test_thresholds_come_from_the_config():
    cap = caption("a dog runs", -1.2)
    assert hedge(cap, CONFIG) == "Possibly a dog runs."
    assert hedge(cap, dataclasses.replace(CONFIG, hedge_sure=-1.5)) == "Probably a dog runs."
    assert hedge(cap, dataclasses.replace(CONFIG, hedge_sure=-0.1, hedge_possible=-0.2)) == (
        "I'm not sure, but perhaps a dog runs.")


@pytest.mark.parametrize("text, said_twice", [
    ("a man is riding a bike on a bike", True), ("a man is sitting on a a bench", True),
    ("a woman in a woman is standing on a city street", True), ("a group of people are standing on a red and red", True),
    ("a black dog is in a black dog in its mouth", True), ("a woman in a hat and a hat", True),
    ("a man in a red shirt is standing in a field", False), ("a brown dog and a black dog are playing", False),
    ("a man and a woman are sitting on a bench", False), ("two dogs play in the grass", False),
])
def test_repeats(text, said_twice):
    """Model output from SCST ("a bike on a bike") is caught; "in a ... in a", two different dogs are not."""
    assert repeats(text.split()) == said_twice


def test_the_repeat_rule_on_ids_is_the_rule_on_words():
    """Decoding bans exactly the next words that would make :func:`repeats` true, on real model output."""
    captions = [c.split() for c in model_captions()]
    words = sorted({w for c in captions for w in c})
    rule, index = RepeatRule(words), {w: i for i, w in enumerate(words)}
    flagged = 0
    for caption in captions:
        ids = [index[w] for w in caption]
        broken = [t for t in range(1, len(ids)) if ids[t] in rule.banned(ids[:t])]
        assert bool(broken) == repeats(caption)
        for t in range(1, len(caption)):  # a prefix free of repeats stays free with any word the rule allows
            if not broken or t < broken[0]:
                allowed = [w for w in ("bike", "a", "the", "dog") if index.get(w) not in rule.banned(ids[:t])]
                assert not any(repeats(caption[:t] + [w]) for w in allowed)
        flagged += bool(broken)
    assert 20 < flagged < len(captions) / 4  # the shipped model says a thing twice in about one caption in ten
