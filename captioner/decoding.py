"""Decoding strategies, kept apart from the model (as keras-hub keeps its samplers).

:func:`greedy` and :func:`beam_search` both drive the decoder one step at a
time through :meth:`AttentionDecoder.step` and return :class:`Caption`
results: the words, the attention map behind each word, the log-probability
and, for teachers, the five likeliest next words at every step. :func:`sample`
draws captions at random through the same step, for self-critical training.

With ``whole_endings``, no strategy may end a caption where the phrase is
unfinished ("sitting on a blue"): ``<end>`` is ruled out after such words
(:mod:`captioner.grammar`), so the search looks for the object instead. With
``block_repeats``, no strategy may say a thing twice ("a man is riding a bike
on a bike", "on a a bench"): the words that would repeat the caption are
ruled out at each step (:func:`captioner.grammar.repeats`).
"""
from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field

import numpy as np
from keras import ops

from .backend import compile_function, to_numpy
from .backend import name as backend_name
from .grammar import EndingRule, RepeatRule
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
    gates: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (len(words),) beta, or empty

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def mean_log_prob(self) -> float:
        """Per-token log-probability: the confidence behind the hedged wording."""
        return self.log_prob / max(1, len(self.words) + int(self.ended))


STEP_COMPILERS = ("graph", "xla")  # how the decoder step is compiled under TensorFlow (JAX: always XLA)
ENV_STEP = "CAPTIONER_DECODER_STEP"  # forces the choice, e.g. CAPTIONER_DECODER_STEP=graph
STEP_GAIN = 0.9  # XLA is chosen only if its step takes at most this share of the graph's
STEP_AGREEMENT = 1e-3  # ... and its log-probabilities differ from the graph's by at most this
STEP_ROUNDS, STEP_CALLS = 3, 20  # timing: alternating rounds (best of each), calls a round


def row_bucket(rows: int) -> int:
    """The rows an XLA step is compiled for: the next of 1, 2, 3, 4, 6, 8, 12, 16, 24, 32 ...

    XLA compiles once for each input shape (about 0.7 s for the shipped decoder), and a beam
    search's rows change as beams finish and photos arrive together; padded to these sizes, a
    handful of compiles serve every search, and at most a third of a step's rows are padding.
    """
    power = 1
    while power < rows:
        power *= 2
    three_quarters = power * 3 // 4  # 3, 6, 12, 24 ...
    return three_quarters if power >= 4 and three_quarters >= rows else power


def photo_bucket(photos: int) -> int:
    """The photos a gathering (beam search) XLA step is compiled for: the next power of two.

    Its cost is in its rows (each reads its photo by index), not in how many photos it reads
    from, so coarse buckets cost only the padding's W_a a_i, once per search, and cut the
    compiles: one for each (photo bucket, row bucket) pair a search meets.
    """
    return 1 << max(0, photos - 1).bit_length()


def step_shapes(beam_size: int, photos: int) -> list[tuple[int, int]]:
    """Every (photo bucket, row bucket) an XLA beam search of 1 to ``photos`` photos at once meets.

    A search of B photos steps with 1 to ``beam_size * B`` rows (B at the start, fewer as beams end)."""
    return sorted({(photo_bucket(b), row_bucket(n)) for b in range(1, photos + 1)
                   for n in range(1, beam_size * b + 1)})


class _Steps:
    """A decoder's prepare() and step, compiled once (any backend), the step as measured fastest.

    ``prepare(features)`` takes numpy features (B, L, D) and returns h_0, c_0 as
    numpy and, as backend tensors, the features and their projection W_a a_i:
    those two are the same at every step, so they are handed to the step as
    they are instead of being converted from numpy again each time. The step
    returns numpy arrays: the search itself runs in numpy.

    ``step(tokens, h, c, features, projected, rows)`` advances n rows: row i
    reads photo ``rows[i]`` of the prepared features (beam search: several
    beams of one photo), or row i itself when ``rows`` is None (greedy,
    sampling). Compiled with XLA, every input is padded to :func:`row_bucket`
    rows (the photos a gathering step reads from: :func:`photo_bucket`) and the
    outputs cut back, so the search never sees the padding.
    """

    def __init__(self, decoder, compiler: str | None = None):
        self.decoder = decoder
        self.compiler = compiler  # None: measured on the first prepare (see best_step_compiler)
        self._prepare = compile_function(decoder.prepare, decoder)
        self._compiled = {}

    def compiled(self, compiler: str, gather: bool):
        """The step compiled by ``compiler`` ("graph" or "xla"), reading features by ``rows`` if ``gather``."""
        if (compiler, gather) not in self._compiled:
            decoder = self.decoder

            def log_probs_step(tokens, rows, h, c, features, projected):
                if gather:  # (B, L, .) -> (n, L, .): each row's photo
                    features, projected = ops.take(features, rows, axis=0), ops.take(projected, rows, axis=0)
                logits, h, c, alpha, beta = decoder.step(tokens, h, c, features, projected, training=False)
                return ops.log_softmax(logits, axis=-1), h, c, alpha, beta

            self._compiled[compiler, gather] = compile_function(log_probs_step, decoder, xla=compiler == "xla")
        return self._compiled[compiler, gather]

    @property
    def padded(self) -> bool:
        return self.compiler == "xla" or backend_name() == "jax"  # jax.jit compiles per shape as well

    def prepare(self, features, gather: bool = False):
        """Compiled with XLA, the photos are padded: to :func:`row_bucket` for a step that reads row i's
        own photo, to :func:`photo_bucket` for one that gathers (``gather``, beam search)."""
        features = np.asarray(features, np.float32)
        if self.compiler is None:
            self.compiler = best_step_compiler(self, features.shape[1:])
        count = len(features)
        size = (photo_bucket if gather else row_bucket)(count) if self.padded else count
        if size > count:
            features = np.concatenate([features, np.zeros((size - count, *features.shape[1:]), np.float32)])
        features = ops.convert_to_tensor(features)
        h, c, projected = self._prepare(features)
        return to_numpy(h)[:count], to_numpy(c)[:count], features, projected

    def step(self, tokens, h, c, features, projected, rows=None):
        n = len(tokens)
        if self.padded:  # gathered: padded to a bucket; else as many rows as prepare padded the photos to
            size = row_bucket(n) if rows is not None else int(features.shape[0])
            extra = size - n
            tokens, h, c = (np.concatenate([x, np.zeros((extra, *x.shape[1:]), x.dtype)]) if extra else x
                            for x in (np.asarray(tokens, np.int32), h, c))
            if rows is not None and extra:
                rows = np.concatenate([rows, np.zeros(extra, np.int32)])
        step = self.compiled(self.compiler, rows is not None)
        rows = np.zeros(0, np.int32) if rows is None else np.asarray(rows, np.int32)
        return tuple(to_numpy(x)[:n] for x in step(tokens, rows, h, c, features, projected))


_steps = weakref.WeakKeyDictionary()


def _functions(decoder) -> _Steps:
    if decoder not in _steps:
        _steps[decoder] = _Steps(decoder)
    return _steps[decoder]


def warm_up(decoder, features: np.ndarray, beam_size: int, photos: int = 1) -> int:
    """Compile (and on a new machine, measure) every step a beam search of up to ``photos`` photos at
    once needs, from one photo's features (L, D), so that no caption waits for a compile and memory
    stops growing once it is done (XLA keeps each compiled shape). Returns the steps compiled."""
    decode = _functions(decoder)
    one = np.asarray(features, np.float32)[None]  # (1, L, D)
    decode.prepare(one)  # chooses the compiler
    shapes = step_shapes(beam_size, photos) if decode.padded else [(1, 1)]  # a plain graph serves any shape
    prepared = {}
    for photo_count, rows in shapes:
        if photo_count not in prepared:
            prepared[photo_count] = decode.prepare(np.repeat(one, photo_count, axis=0), gather=True)
        h, c, features_b, projected = prepared[photo_count]
        photo = np.zeros(rows, np.int32)
        decode.step(photo, h[photo], c[photo], features_b, projected, photo)
    return len(shapes)


def best_step_compiler(steps: _Steps, shape: tuple[int, int], cache_file=None, measure=None) -> str:
    """How to compile the decoder step on this machine: "graph" (a plain tf.function) or "xla".

    Measured, like the encoder's arithmetic (:mod:`captioner.measured`): the
    first time on a machine, both compile a beam search's step (3 beams of a
    photo of ``shape`` = (L, D)) and take turns for :data:`STEP_ROUNDS` rounds
    of :data:`STEP_CALLS` calls; XLA is kept if it takes at most
    :data:`STEP_GAIN` of the graph's time and agrees within
    :data:`STEP_AGREEMENT`. The choice is remembered per machine, libraries
    and decoder shape (``$XDG_CACHE_HOME/captioner/decoder-step.json``) and
    logged. ``CAPTIONER_DECODER_STEP`` forces one. Under JAX the step is always
    XLA. ``measure`` (for tests) replaces the timing: ``measure(compiler) ->
    (seconds, log-probabilities)``.
    """
    import logging
    import os

    from .measured import cache_home, machine_key, remembered

    if backend_name() == "jax":
        return "xla"
    forced = os.environ.get(ENV_STEP)
    if forced:
        if forced not in STEP_COMPILERS:
            raise ValueError(f"{ENV_STEP}={forced!r}: it must be one of {', '.join(STEP_COMPILERS)}")
        return forced
    decoder = steps.decoder
    key = " | ".join([machine_key(), type(decoder).__name__, json.dumps(decoder.get_config().get("vocab_size")),
                      *(f"{k} {decoder.get_config().get(k)}" for k in ("embed_dim", "lstm_units", "attention_dim")),
                      f"features {tuple(int(x) for x in shape)}"])

    def choose() -> dict:
        timer = measure or _step_timer(steps, shape)
        seconds, out = {c: float("inf") for c in STEP_COMPILERS}, {}
        for _ in range(STEP_ROUNDS):
            for compiler in STEP_COMPILERS:
                took, out[compiler] = timer(compiler)
                seconds[compiler] = min(seconds[compiler], took)
        difference = float(np.max(np.abs(np.asarray(out["xla"]) - np.asarray(out["graph"]))))
        xla = seconds["xla"] <= STEP_GAIN * seconds["graph"] and difference <= STEP_AGREEMENT
        choice = "xla" if xla else "graph"
        logging.getLogger(__name__).warning(
            "decoder step: %s (measured on this machine: %s a step; largest difference %.1e)", choice,
            ", ".join(f"{c} {1000 * t:.2f} ms" for c, t in seconds.items()), difference)
        return {"compiler": choice, "seconds": seconds, "difference": difference}

    cache_file = cache_file or cache_home() / "decoder-step.json"
    return remembered(cache_file, key, "compiler", lambda c: c in STEP_COMPILERS, choose)


def _step_timer(steps: _Steps, shape):
    """measure(compiler) -> (seconds a step, log-probabilities): 3 beams of one photo, random features."""
    import time

    features = ops.convert_to_tensor(np.random.default_rng(0).random((1, *shape), np.float32))
    h, c, projected = steps._prepare(features)
    rows = np.zeros(3, np.int32)
    tokens, h, c = np.zeros(3, np.int32), to_numpy(h)[rows], to_numpy(c)[rows]

    def measure(compiler):
        step = steps.compiled(compiler, gather=True)
        first = to_numpy(step(tokens, rows, h, c, features, projected)[0])  # traced, compiled, warm
        start = time.perf_counter()
        for _ in range(STEP_CALLS):
            [to_numpy(x) for x in step(tokens, rows, h, c, features, projected)]
        return (time.perf_counter() - start) / STEP_CALLS, first

    return measure


def _banned(vocab: Vocabulary) -> list[int]:
    return [vocab.pad_id, vocab.start_id, vocab.unk_id]


_rules = weakref.WeakKeyDictionary()


def _ending_rule(vocab: Vocabulary) -> EndingRule:
    """The vocabulary's :class:`EndingRule`, built once per vocabulary."""
    if vocab not in _rules:
        _rules[vocab] = EndingRule(vocab.words)
    return _rules[vocab]


def _forbid_end(log_probs: np.ndarray, vocab: Vocabulary, t: int, whole_endings: bool, last: np.ndarray,
                before: np.ndarray) -> None:
    """Rule out ``<end>`` in place: at the first step (no empty caption) and, with ``whole_endings``,
    after an unfinished phrase. ``last``, ``before`` (n,): each row's last two tokens."""
    if t == 0:
        log_probs[:, vocab.end_id] = -np.inf
    elif whole_endings:
        log_probs[_ending_rule(vocab).may_not_end(last, before), vocab.end_id] = -np.inf


_repeat_rules = weakref.WeakKeyDictionary()


def _repeat_rule(vocab: Vocabulary) -> RepeatRule:
    """The vocabulary's :class:`RepeatRule`, built once per vocabulary."""
    if vocab not in _repeat_rules:
        _repeat_rules[vocab] = RepeatRule(vocab.words)
    return _repeat_rules[vocab]


def _forbid_repeats(log_probs: np.ndarray, vocab: Vocabulary, histories, block_repeats: bool) -> None:
    """With ``block_repeats``, rule out in place every next word that would make a row's caption say a thing
    twice ("a bike on a bike", "on a a bench"; :func:`captioner.grammar.repeats`). ``histories``: each row's
    word ids so far."""
    if not block_repeats:
        return
    rule = _repeat_rule(vocab)
    for row, history in enumerate(histories):
        banned = rule.banned(history)
        if banned:
            log_probs[row, banned] = -np.inf


def blocked_ends(vocab: Vocabulary, tokens: np.ndarray, whole_endings: bool) -> np.ndarray:
    """Where :func:`_forbid_end` ruled ``<end>`` out while ``tokens`` were drawn, for whole captions at once.

    tokens (N, T + 1) ``<start> w_1 ..`` -> (N, T) bool: True where the step
    that chose ``tokens[:, t + 1]`` could not choose ``<end>``. Self-critical
    training needs it to score each word under the policy the sampler really
    drew from (see :class:`captioner.model.SelfCriticalModel`).
    """
    tokens = np.asarray(tokens)
    blocked = np.zeros((tokens.shape[0], tokens.shape[1] - 1), bool)
    blocked[:, 0] = True  # no empty caption
    if whole_endings and blocked.shape[1] > 1:
        blocked[:, 1:] = _ending_rule(vocab).may_not_end(tokens[:, 1:-1], tokens[:, :-2])
    return blocked


def blocked_repeats(vocab: Vocabulary, tokens: np.ndarray, block_repeats: bool) -> np.ndarray:
    """Which words :func:`_forbid_repeats` ruled out while ``tokens`` were drawn, for whole captions at once.

    tokens (N, T + 1) ``<start> w_1 ..`` -> (N, T, R) int32: the ids ruled out at the step that chose
    ``tokens[:, t + 1]``, padded with -1 (R at least 1; all -1 without ``block_repeats``). Like
    :func:`blocked_ends`, for self-critical training's loss.
    """
    tokens = np.asarray(tokens)
    n, steps = tokens.shape[0], tokens.shape[1] - 1
    banned = [[[] for _ in range(steps)] for _ in range(n)]
    if block_repeats:
        rule, special = _repeat_rule(vocab), {vocab.pad_id, vocab.end_id}
        for i in range(n):
            for t in range(steps):
                if t and tokens[i, t] in special:
                    break  # the caption ended: later steps are padding, never scored
                banned[i][t] = rule.banned(tokens[i, 1:t + 1].tolist())
    width = max([1] + [len(b) for row in banned for b in row])
    out = np.full((n, steps, width), -1, np.int32)
    for i, row in enumerate(banned):
        for t, ids in enumerate(row):
            out[i, t, : len(ids)] = ids
    return out


def _largest(values: np.ndarray, k: int) -> np.ndarray:
    """The indices of the k largest of ``values`` (n,), largest first, ties by index: exactly
    ``np.argsort(-values, kind="stable")[:k]``, without sorting all n (3 beams x the vocabulary)."""
    if k >= len(values):
        return np.argsort(-values, kind="stable")
    kth = np.partition(values, len(values) - k)[len(values) - k]  # the k-th largest value
    candidates = np.flatnonzero(values >= kth)  # every index that may be among the k, in index order
    return candidates[np.argsort(-values[candidates], kind="stable")[:k]]


def _top(log_probs: np.ndarray, vocab: Vocabulary) -> list[tuple[str, float]]:
    best = _largest(log_probs, TOP_K_SHOWN)
    return [(vocab.words[i], float(np.exp(log_probs[i]))) for i in best]


def _grid(alphas: list[np.ndarray]) -> np.ndarray:
    """Per-word attention (T, L) as maps (T, G, G); (T, 0, 0) for a decoder without attention."""
    if not alphas:
        return np.zeros((0, 0, 0), np.float32)
    flat = np.stack(alphas).astype(np.float32)  # (T, L)
    side = int(round(np.sqrt(flat.shape[1])))
    return flat.reshape(len(alphas), side, side)


def _gates(betas: list[np.ndarray]) -> np.ndarray:
    """Per-word beta (T,); empty for a decoder without attention."""
    flat = np.stack(betas).astype(np.float32) if betas else np.zeros((0, 0), np.float32)  # (T, 1) or (T, 0)
    return flat[:, 0] if flat.shape[1] else np.zeros(0, np.float32)


def _score(log_prob: float, length: int, length_penalty: float) -> float:
    return log_prob / max(1, length) ** length_penalty


def greedy(decoder, vocab: Vocabulary, features: np.ndarray, max_length: int, length_penalty: float = 0.0,
           with_steps: bool = False, whole_endings: bool = False, block_repeats: bool = False) -> list[Caption]:
    """The likeliest word at every step, for a batch of photos: features (B, L, D)."""
    decode = _functions(decoder)
    h, c, features, projected = decode.prepare(features)  # features and projected stay backend tensors
    batch = h.shape[0]
    tokens = np.full((batch,), vocab.start_id, np.int32)
    banned = _banned(vocab)
    words = [[] for _ in range(batch)]
    alphas = [[] for _ in range(batch)]
    betas = [[] for _ in range(batch)]
    steps = [[] for _ in range(batch)]
    log_prob = np.zeros(batch)
    ended = np.zeros(batch, bool)
    before = tokens.copy()
    ids = [[] for _ in range(batch)]  # each photo's word ids so far
    for t in range(max_length + 1):
        log_probs, h, c, alpha, beta = decode.step(tokens, h, c, features, projected)  # (B, V), (B, n) x 2, ..
        log_probs[:, banned] = -np.inf
        _forbid_end(log_probs, vocab, t, whole_endings, tokens, before)
        _forbid_repeats(log_probs, vocab, ids, block_repeats)
        if t == max_length:
            break  # cut off: no <end> within max_length words
        before, tokens = tokens, np.argmax(log_probs, axis=-1).astype(np.int32)
        for b in np.flatnonzero(~ended):
            if with_steps:
                steps[b].append(_top(log_probs[b], vocab))
            log_prob[b] += log_probs[b, tokens[b]]
            if tokens[b] == vocab.end_id:
                ended[b] = True
            else:
                words[b].append(vocab.words[tokens[b]])
                ids[b].append(int(tokens[b]))
                alphas[b].append(alpha[b])
                betas[b].append(beta[b])
        if ended.all():
            break
    return [
        Caption(words[b], _grid(alphas[b]), float(log_prob[b]),
                _score(float(log_prob[b]), len(words[b]) + int(ended[b]), length_penalty),
                steps[b], [], bool(ended[b]), _gates(betas[b]))
        for b in range(batch)
    ]


def beam_search(decoder, vocab: Vocabulary, features: np.ndarray, beam_size: int, max_length: int,
                length_penalty: float = 0.7, with_steps: bool = False, whole_endings: bool = False,
                block_repeats: bool = False) -> Caption:
    """Beam search for one photo: features (L, D). See :func:`beam_search_batch`."""
    return beam_search_batch(decoder, vocab, np.asarray(features)[None], beam_size, max_length, length_penalty,
                             with_steps, whole_endings, block_repeats)[0]


def beam_search_batch(decoder, vocab: Vocabulary, features: np.ndarray, beam_size: int, max_length: int,
                      length_penalty: float = 0.7, with_steps: bool = False,
                      whole_endings: bool = False, block_repeats: bool = False) -> list[Caption]:
    """Beam search for each of B photos, features (B, L, D); every live beam of every photo advances in one
    batched step, so photos that arrive together (the app under load) share the decoder's work.

    For each photo on its own: a beam leaves the search when it emits <end>,
    and the width shrinks by one, so ``beam_size`` captions finish (or reach
    ``max_length`` words). They are ranked by log p / length ** length_penalty;
    the best is returned, the rest are its ``alternatives``. The photos do not
    meet: each one's captions are what a search for it alone returns.
    ``beam_size=1`` gives exactly :func:`greedy`.
    """
    if beam_size < 1:
        raise ValueError("beam_size must be at least 1")
    decode = _functions(decoder)
    h, c, features, projected = decode.prepare(features, gather=True)  # (B, n) x 2, (B, L, D), (B, L, A)
    count = h.shape[0]
    banned = _banned(vocab)
    # Per photo, its live beams: (tokens, log p, alphas, steps, betas); one live beam each to start.
    beams = {b: [([], 0.0, [], [], [])] for b in range(count)}
    finished = {b: [] for b in range(count)}
    tokens = np.full(count, vocab.start_id, np.int32)
    for t in range(max_length + 1):
        photos = list(beams)  # those still searching, in row order
        rows = np.concatenate([[b] * len(beams[b]) for b in photos]).astype(np.int32)  # the photo of each row
        log_probs, h_new, c_new, alpha, beta = decode.step(tokens, h, c, features, projected, rows)  # (n, V), ..
        log_probs[:, banned] = -np.inf
        history = [[vocab.start_id] * 2 + beam[0] for b in photos for beam in beams[b]]
        _forbid_end(log_probs, vocab, t, whole_endings, np.array([x[-1] for x in history]),
                    np.array([x[-2] for x in history]))
        _forbid_repeats(log_probs, vocab, [beam[0] for b in photos for beam in beams[b]], block_repeats)
        next_rows, next_beams, first = [], {}, 0
        for b in photos:
            live, n = beams[b], len(beams[b])
            own = log_probs[first:first + n]  # (n, V): this photo's rows
            if t == max_length:  # out of room: the live beams finish as they are
                finished[b] += [(*beam, False) for beam in live]
                first += n
                continue
            width = beam_size - len(finished[b])
            total = np.array([beam[1] for beam in live])[:, None] + own  # (n, V)
            order = _largest(total.ravel(), width)
            keep = []
            for flat in order:
                parent, word = divmod(int(flat), total.shape[1])
                ptoks, _, palphas, psteps, pbetas = live[parent]
                new_steps = psteps + [_top(own[parent], vocab)] if with_steps else psteps
                if word == vocab.end_id:
                    finished[b].append((ptoks, float(total[parent, word]), palphas, new_steps, pbetas, True))
                else:
                    keep.append(((ptoks + [word], float(total[parent, word]), palphas + [alpha[first + parent]],
                                  new_steps, pbetas + [beta[first + parent]]), first + parent))
            if keep and len(finished[b]) < beam_size:
                next_beams[b] = [k[0] for k in keep]
                next_rows += [k[1] for k in keep]
            first += n
        if not next_beams:
            break
        beams = next_beams
        h, c = h_new[next_rows], c_new[next_rows]
        tokens = np.array([beam[0][-1] for b in beams for beam in beams[b]], np.int32)
    results = []
    for b in range(count):
        captions = [
            Caption([vocab.words[i] for i in toks], _grid(alphas), lp,
                    _score(lp, len(toks) + int(ended), length_penalty), steps, [], ended, _gates(betas))
            for toks, lp, alphas, steps, betas, ended in finished[b]
        ]
        captions.sort(key=lambda cap: -cap.score)
        best = captions[0]
        best.alternatives = captions[1:]
        results.append(best)
    return results


def sample(decoder, vocab: Vocabulary, features: np.ndarray, samples: int, max_length: int, rng: np.random.Generator,
           whole_endings: bool = False, block_repeats: bool = False) -> np.ndarray:
    """``samples`` captions drawn at random for each photo, word by word from p(y_t | y_<t, a).

    features (B, L, D) -> token ids (B * samples, max_length + 2): ``<start> w_1 .. w_n <end> <pad> ..``,
    the samples of photo b in rows b * samples ... (b + 1) * samples - 1. A caption that reaches
    ``max_length`` words has no ``<end>``. Used by self-critical training, with the decoder's
    dropout off; the same rules as :func:`greedy` (no specials, no empty caption, ``whole_endings``,
    ``block_repeats``).
    """
    decode = _functions(decoder)
    h, c, features, projected = decode.prepare(np.repeat(np.asarray(features, np.float32), samples, axis=0))  # N = B K
    n = h.shape[0]
    out = np.zeros((n, max_length + 2), np.int32)
    out[:, 0] = vocab.start_id
    tokens, before = out[:, 0].copy(), out[:, 0].copy()
    live = np.ones(n, bool)
    banned = _banned(vocab)
    for t in range(max_length):
        log_probs, h, c, _, _ = decode.step(tokens, h, c, features, projected)  # (N, V)
        log_probs[:, banned] = -np.inf
        _forbid_end(log_probs, vocab, t, whole_endings, tokens, before)
        _forbid_repeats(log_probs, vocab, out[:, 1:t + 1].tolist() if block_repeats else [], block_repeats)
        probs = np.exp(log_probs - log_probs.max(axis=1, keepdims=True))
        cumulative = np.cumsum(probs, axis=1)
        draws = rng.random(n)[:, None] * cumulative[:, -1:]  # one uniform draw per row, inverse CDF
        chosen = np.minimum((cumulative < draws).sum(axis=1), probs.shape[1] - 1).astype(np.int32)
        out[live, t + 1] = chosen[live]
        live &= chosen != vocab.end_id
        if not live.any():
            break
        before, tokens = tokens, chosen
    return out
