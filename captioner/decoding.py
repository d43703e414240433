"""Decoding strategies, kept apart from the model (as keras-hub keeps its samplers).

:func:`greedy` and :func:`beam_search` both drive the decoder one step at a
time through :meth:`AttentionDecoder.step` and return :class:`Caption`
results: the words, the attention map behind each word, the log-probability
and, for teachers, the five likeliest next words at every step.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np
from keras import ops

from .backend import compile_function, to_numpy
from .vocab import Vocabulary

TOP_K_SHOWN = 5


@dataclass
class Caption:
    words: list[str]
    attention: np.ndarray  # (len(words), G, G): where the model looked for each word
    log_prob: float  # sum of log p over the words and <end> (if reached)
    score: float  # log_prob / length ** length_penalty, what beam search ranks by
    steps: list[list[tuple[str, float]]] = field(default_factory=list)  # top next words, with p
    alternatives: list["Caption"] = field(default_factory=list)  # other finished beams, best first
    ended: bool = True  # False when cut off at the maximum length

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def mean_log_prob(self) -> float:
        """Per-token log-probability: the confidence behind the hedged wording."""
        return self.log_prob / max(1, len(self.words) + int(self.ended))


_compiled = weakref.WeakKeyDictionary()


def _functions(decoder):
    """prepare() and a step that returns log-probabilities, compiled once per decoder (any backend).

    Both return numpy arrays: the search itself runs in numpy.
    """
    if decoder not in _compiled:
        prepare = compile_function(decoder.prepare, decoder)

        def log_probs_step(tokens, h, c, features, projected):
            logits, h, c, alpha = decoder.step(tokens, h, c, features, projected, training=False)
            return ops.log_softmax(logits, axis=-1), h, c, alpha

        step = compile_function(log_probs_step, decoder)
        _compiled[decoder] = (lambda *a: tuple(map(to_numpy, prepare(*a))),
                              lambda *a: tuple(map(to_numpy, step(*a))))
    return _compiled[decoder]


def _banned(vocab: Vocabulary) -> list[int]:
    return [vocab.pad_id, vocab.start_id, vocab.unk_id]


def _top(log_probs: np.ndarray, vocab: Vocabulary) -> list[tuple[str, float]]:
    best = np.argsort(-log_probs, kind="stable")[:TOP_K_SHOWN]
    return [(vocab.words[i], float(np.exp(log_probs[i]))) for i in best]


def _grid(alphas: list[np.ndarray]) -> np.ndarray:
    if not alphas:
        return np.zeros((0, 0, 0), np.float32)
    flat = np.stack(alphas).astype(np.float32)  # (T, L)
    side = int(round(np.sqrt(flat.shape[1])))
    return flat.reshape(len(alphas), side, side)


def _score(log_prob: float, length: int, length_penalty: float) -> float:
    return log_prob / max(1, length) ** length_penalty


def greedy(decoder, vocab: Vocabulary, features: np.ndarray, max_length: int, length_penalty: float = 0.0,
           with_steps: bool = False) -> list[Caption]:
    """The likeliest word at every step, for a batch of photos: features (B, L, D)."""
    prepare, step = _functions(decoder)
    features = np.asarray(features, np.float32)
    h, c, projected = prepare(features)
    batch = features.shape[0]
    tokens = np.full((batch,), vocab.start_id, np.int32)
    banned = _banned(vocab)
    words = [[] for _ in range(batch)]
    alphas = [[] for _ in range(batch)]
    steps = [[] for _ in range(batch)]
    log_prob = np.zeros(batch)
    ended = np.zeros(batch, bool)
    for t in range(max_length + 1):
        log_probs, h, c, alpha = step(tokens, h, c, features, projected)  # (B, V), h and c (B, units), (B, L)
        log_probs[:, banned] = -np.inf
        if t == 0:
            log_probs[:, vocab.end_id] = -np.inf  # never an empty caption
        if t == max_length:
            break  # cut off: no <end> within max_length words
        tokens = np.argmax(log_probs, axis=-1).astype(np.int32)
        for b in np.flatnonzero(~ended):
            if with_steps:
                steps[b].append(_top(log_probs[b], vocab))
            log_prob[b] += log_probs[b, tokens[b]]
            if tokens[b] == vocab.end_id:
                ended[b] = True
            else:
                words[b].append(vocab.words[tokens[b]])
                alphas[b].append(alpha[b])
        if ended.all():
            break
    return [
        Caption(words[b], _grid(alphas[b]), float(log_prob[b]),
                _score(float(log_prob[b]), len(words[b]) + int(ended[b]), length_penalty),
                steps[b], [], bool(ended[b]))
        for b in range(batch)
    ]


def beam_search(decoder, vocab: Vocabulary, features: np.ndarray, beam_size: int, max_length: int,
                length_penalty: float = 0.7, with_steps: bool = False) -> Caption:
    """Beam search for one photo: features (L, D). Every live beam advances in one batched step.

    A beam leaves the search when it emits <end>, and the width shrinks by one,
    so ``beam_size`` captions finish (or reach ``max_length`` words). They are
    ranked by log p / length ** length_penalty; the best is returned, the rest
    are its ``alternatives``. ``beam_size=1`` gives exactly :func:`greedy`.
    """
    if beam_size < 1:
        raise ValueError("beam_size must be at least 1")
    prepare, step = _functions(decoder)
    features = np.asarray(features, np.float32)[None]  # (1, L, D)
    h, c, projected = prepare(features)  # (1, n), (1, n), (1, L, A)
    banned = _banned(vocab)
    # One live beam to start: (tokens, log p, alphas, steps)
    beams = [([], 0.0, [], [])]
    tokens = np.array([vocab.start_id], np.int32)
    finished = []
    for t in range(max_length + 1):
        n = len(beams)
        log_probs, h_new, c_new, alpha = step(tokens, h, c, np.repeat(features, n, 0),
                                              np.repeat(projected, n, 0))  # (n, V), h and c (n, units), (n, L)
        log_probs[:, banned] = -np.inf
        if t == 0:
            log_probs[:, vocab.end_id] = -np.inf
        if t == max_length:  # out of room: the live beams finish as they are
            finished += [(b[0], b[1], b[2], b[3], False) for b in beams]
            break
        width = beam_size - len(finished)
        total = np.array([b[1] for b in beams])[:, None] + log_probs  # (n, V)
        order = np.argsort(-total.ravel(), kind="stable")[:width]
        keep = []
        for flat in order:
            parent, word = divmod(int(flat), total.shape[1])
            ptoks, _, palphas, psteps = beams[parent]
            new_steps = psteps + [_top(log_probs[parent], vocab)] if with_steps else psteps
            if word == vocab.end_id:
                finished.append((ptoks, float(total[parent, word]), palphas, new_steps, True))
            else:
                keep.append((ptoks + [word], float(total[parent, word]), palphas + [alpha[parent]], new_steps, parent))
        if not keep:
            break
        beams = [k[:4] for k in keep]
        parents = [k[4] for k in keep]
        h, c = h_new[parents], c_new[parents]
        tokens = np.array([k[0][-1] for k in keep], np.int32)
        if len(finished) >= beam_size:
            break
    captions = [
        Caption([vocab.words[i] for i in toks], _grid(alphas), lp, _score(lp, len(toks) + int(ended), length_penalty),
                steps, [], ended)
        for toks, lp, alphas, steps, ended in finished
    ]
    captions.sort(key=lambda cap: -cap.score)
    best = captions[0]
    best.alternatives = captions[1:]
    return best
