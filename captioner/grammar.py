"""Which caption endings leave a phrase unfinished, in words and in vocabulary ids.

Used twice: decoding may not end a caption on such an ending (``<end>`` is
not allowed right after "on a", "a group of people on a blue" ...), and the
hedged wording drops such words from captions cut off at the length limit.
Self-critical training (SCST) is known to learn these endings, because CIDEr
rewards the n-grams before them and does not punish the missing object.
"""
from __future__ import annotations

import numpy as np

# Words a finished English caption does not end with: determiners and numbers, prepositions
# that need an object, conjunctions; and a colour or size right after a determiner ("on a blue").
# Particles that may end a sentence ("sitting down", "running around") are not listed.
DETERMINERS = frozenset("a an the his her their its this that these those some two three four five several many "
                        "each another".split())
PREPOSITIONS = frozenset("on in at of with by for from into onto through near under behind beside next to "
                         "across against towards toward between".split())
CONJUNCTIONS = frozenset("and or but while as".split())
ADJECTIVES = frozenset("black white red blue green yellow orange pink purple brown grey gray large small big little "
                       "young tall wet snowy grassy sandy rocky colorful striped".split())
FUNCTION_WORDS = DETERMINERS | PREPOSITIONS | CONJUNCTIONS


def dangling(words: list[str]) -> int:
    """How many words at the end of ``words`` leave a phrase unfinished: 0, 1 or 2."""
    if not words:
        return 0
    if words[-1] in FUNCTION_WORDS:
        return 1
    if len(words) >= 2 and words[-1] in ADJECTIVES and words[-2] in DETERMINERS:
        return 2
    return 0


def broken_ending(words: list[str]) -> bool:
    """True when a caption ends mid-phrase: "... on a", "... sitting on", "... a group of people on a blue"."""
    return dangling(words) > 0


class EndingRule:
    """:func:`broken_ending` on vocabulary ids, for a whole batch of partial captions at once."""

    def __init__(self, words: list[str]):
        self.function = np.array([w in FUNCTION_WORDS for w in words])
        self.adjective = np.array([w in ADJECTIVES for w in words])
        self.determiner = np.array([w in DETERMINERS for w in words])

    def may_not_end(self, last: np.ndarray, before: np.ndarray) -> np.ndarray:
        """(B,) bool: True where ``<end>`` after the ids ``before``, ``last`` would leave a phrase unfinished.

        ``before`` is the id before ``last`` (any id that is not a word, such as ``<start>``, where there is none).
        """
        return self.function[last] | (self.adjective[last] & self.determiner[before])


def _repeating(history, is_content) -> set:
    """The next words that would repeat what ``history`` already says (see :func:`repeats`)."""
    if not history:
        return set()
    last = history[-1]
    out = {last}  # "a a", "bench bench"
    out.update(history[i + 1] for i in range(len(history) - 1)
               if history[i] == last and is_content(history[i + 1]))  # "a bike on a bike", "a brown dog .. brown dog"
    for word in reversed(history):  # "red and red", "a hat and a hat", "a woman in a woman"
        if is_content(word):
            out.add(word)
            break
    return out


def repeats(words: list[str]) -> bool:
    """True when a caption says a thing twice, the way a self-critically trained decoder does and people don't:
    a word twice in a row ("on a a bench"), a word pair ending in a content word twice ("a man is riding a bike
    on a bike"), or a content word again with only function words between ("a woman in a woman", "red and red").
    """
    content = lambda w: w not in FUNCTION_WORDS  # noqa: E731
    return any(words[t] in _repeating(words[:t], content) for t in range(1, len(words)))


class RepeatRule:
    """:func:`repeats` on vocabulary ids: the words a partial caption may not say next."""

    def __init__(self, words: list[str]):
        self.content = np.array([w not in FUNCTION_WORDS for w in words])

    def banned(self, history: list[int]) -> list[int]:
        """Ids that would make ``history`` (the caption's word ids so far) repeat itself."""
        return sorted(_repeating(list(history), lambda i: bool(self.content[i])))
