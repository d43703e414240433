"""CIDEr-D (Vedantam et al., 2015), the reward of self-critical training and a score of ``evaluate``.

Each caption becomes four tf-idf vectors (its 1- to 4-grams, weighted by
log(N / document frequency), N = the number of photos whose references set
the document frequencies). The score against one reference is the mean over
n of the clipped cosine similarity, times a Gaussian penalty on the length
difference (sigma 6); a photo's score is 10 x the mean over its references.
This is the variant that coco-caption's (pycocoevalcap's) ``Cider`` computes,
including its quirks (the length compared is the count of bigrams), and it
gives the same numbers (``tests/test_cider.py``).

Two ways to set the document frequencies:

- :func:`corpus_cider`: from the references of the photos being scored, as
  pycocoevalcap does (what ``evaluate`` reports);
- :class:`CiderD`: once, from the training references, then reused for every
  sampled caption (what self-critical training needs: thousands of scores a
  second against fixed references).
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

N = 4
SIGMA = 6.0


def ngrams(words: list[str], n: int = N) -> Counter:
    """Counts of every 1- to n-gram of ``words``, keyed by tuples of words."""
    counts = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i:i + k])] += 1
    return counts


class CiderD:
    """CIDEr-D with document frequencies fixed by a reference corpus.

    ``references[i]`` is the list of tokenised reference captions of photo i;
    :meth:`scores` compares hypotheses with the references of given photos.
    """

    def __init__(self, references: list[list[list[str]]], sigma: float = SIGMA):
        self.sigma = sigma
        self.df = Counter()
        for refs in references:
            self.df.update(set().union(*(ngrams(r) for r in refs)) if refs else ())
        self.log_n = math.log(float(len(references)))
        self._refs = [[self._vector(ngrams(r)) for r in refs] for refs in references]

    def _vector(self, counts: Counter):
        """tf-idf vectors by n-gram order, their norms and the caption's length (as coco-caption counts it)."""
        vec = [{} for _ in range(N)]
        norm = [0.0] * N
        for gram, tf in counts.items():
            n = len(gram) - 1
            value = tf * (self.log_n - math.log(max(1.0, self.df.get(gram, 0.0))))
            vec[n][gram] = value
            norm[n] += value * value
        length = sum(tf for gram, tf in counts.items() if len(gram) == 2)  # coco-caption's length: bigrams
        return vec, [math.sqrt(x) for x in norm], length

    def _similarity(self, hyp, ref) -> float:
        (hv, hn, hl), (rv, rn, rl) = hyp, ref
        penalty = math.exp(-((hl - rl) ** 2) / (2 * self.sigma ** 2))
        total = 0.0
        for n in range(N):
            if hn[n] == 0 or rn[n] == 0:
                continue
            refs = rv[n]
            dot = sum(min(v, refs[g]) * refs[g] for g, v in hv[n].items() if g in refs)  # clipped
            total += dot / (hn[n] * rn[n])
        return penalty * total / N

    def vector(self, words: list[str]):
        """A caption's tf-idf vectors under these document frequencies, for :meth:`against`."""
        return self._vector(ngrams(words))

    def against(self, hyp, refs: list) -> float:
        """CIDEr-D of one caption's :meth:`vector` against any list of captions' vectors (0 for none)."""
        return 10.0 * sum(self._similarity(hyp, ref) for ref in refs) / len(refs) if refs else 0.0

    def score(self, words: list[str], photo: int) -> float:
        """CIDEr-D of one hypothesis against the references of ``photo``."""
        return self.against(self.vector(words), self._refs[photo])

    def scores(self, hypotheses: list[list[str]], photos) -> np.ndarray:
        """(len(hypotheses),) CIDEr-D of each hypothesis against its photo's references."""
        return np.array([self.score(h, int(p)) for h, p in zip(hypotheses, photos)], np.float64)


def corpus_cider(references: list[list[list[str]]], hypotheses: list[list[str]]) -> float:
    """Mean CIDEr-D of ``hypotheses[i]`` against ``references[i]``, the document frequencies from these
    references (pycocoevalcap's ``Cider().compute_score``)."""
    scorer = CiderD(references)
    return float(np.mean(scorer.scores(hypotheses, range(len(hypotheses))))) if hypotheses else 0.0
