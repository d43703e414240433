import numpy as np
import pytest

from captioner.config import ModelConfig
from captioner.encoder import feature_shape
from captioner.image import load_image, preprocess
from captioner.vocab import SPECIALS, Vocabulary
from captioner.decoding import beam_search, greedy
from captioner.model import build_model


def test_trained_tiny_model_reproduces_its_captions(synthetic_data, tiny_captioner):
    root, truth = synthetic_data
    for name, caption in truth.items():
        assert tiny_captioner.describe(root / "Images" / name, beam_size=1).text == caption


def test_beam_width_one_equals_greedy(synthetic_data, tiny_captioner):
    root, truth = synthetic_data
    c = tiny_captioner
    for name in list(truth)[:4]:
        pixels = preprocess(load_image(root / "Images" / name), c.config)
        features = c.features(pixels[None])
        g = greedy(c.decoder, c.vocab, features, c.config.max_length, c.config.length_penalty, with_steps=True)[0]
        b = beam_search(c.decoder, c.vocab, features[0], 1, c.config.max_length, c.config.length_penalty,
                        with_steps=True)
        assert b.words == g.words
        assert b.log_prob == pytest.approx(g.log_prob, abs=1e-4)
        np.testing.assert_allclose(b.attention, g.attention, atol=1e-6)
        assert [w for w, _ in b.steps[0]] == [w for w, _ in g.steps[0]]


def test_beam_result_is_ranked_with_attention_per_word(synthetic_data, tiny_captioner):
    root, truth = synthetic_data
    name = next(iter(truth))
    cap = tiny_captioner.describe(root / "Images" / name, beam_size=4, with_steps=True).caption
    g, _, _ = feature_shape(tiny_captioner.config)
    assert cap.attention.shape == (len(cap.words), g, g)
    np.testing.assert_allclose(cap.attention.sum(axis=(1, 2)), 1.0, rtol=1e-4)
    assert len(cap.alternatives) == 3
    assert all(cap.score >= alt.score for alt in cap.alternatives)
    assert cap.ended and cap.mean_log_prob <= 0
    # the teacher view: five likeliest next words per step, most likely first, the chosen one among them
    assert len(cap.steps) == len(cap.words) + 1
    for step, word in zip(cap.steps, cap.words + ["<end>"]):
        probs = [p for _, p in step]
        assert len(step) == 5 and probs == sorted(probs, reverse=True) and word in [w for w, _ in step]


def _random_decoder(vocab_size=12, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    config = ModelConfig(image_size=32, embed_dim=8, lstm_units=8, attention_dim=8, dropout=0.0)
    return config, build_model(config, vocab_size).decoder


def _regions(config):
    grid, _, _ = feature_shape(config)
    return grid * grid


def test_stops_at_max_length_and_never_emits_specials():
    config, decoder = _random_decoder()
    vocab = Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(8)])
    # make <end>, <unk>, <pad> and <start> far likelier than any word
    bias = decoder.logits.bias.numpy()
    bias[[0, 1, 3]] = 50.0
    decoder.logits.bias.assign(bias)
    features = np.random.default_rng(0).random((2, _regions(config), 512)).astype(np.float32)
    bias[2] = -50.0  # no <end> either: captions run to the maximum length
    decoder.logits.bias.assign(bias)
    for cap in greedy(decoder, vocab, features, max_length=4):
        assert len(cap.words) == 4 and not cap.ended
        assert not set(cap.words) & set(SPECIALS)
    cap = beam_search(decoder, vocab, features[0], 3, max_length=4)
    assert len(cap.words) == 4 and not cap.ended and not set(cap.words) & set(SPECIALS)


def test_stops_at_end():
    config, decoder = _random_decoder()
    vocab = Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(8)])
    bias = decoder.logits.bias.numpy()
    bias[2] = 20.0  # <end> as soon as it is allowed (never as the first word)
    decoder.logits.bias.assign(bias)
    features = np.random.default_rng(1).random((1, _regions(config), 512)).astype(np.float32)
    (cap,) = greedy(decoder, vocab, features, max_length=10)
    assert len(cap.words) == 1 and cap.ended
    beam = beam_search(decoder, vocab, features[0], 3, max_length=10)
    assert len(beam.words) == 1 and beam.ended


def test_length_penalty_changes_ranking_score_only():
    config, decoder = _random_decoder(seed=3)
    vocab = Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(8)])
    features = np.random.default_rng(2).random((_regions(config), 512)).astype(np.float32)
    raw = beam_search(decoder, vocab, features, 3, 6, length_penalty=0.0)
    assert raw.score == pytest.approx(raw.log_prob)
    normed = beam_search(decoder, vocab, features, 3, 6, length_penalty=1.0)
    length = len(normed.words) + int(normed.ended)
    assert normed.score == pytest.approx(normed.log_prob / length)
    with pytest.raises(ValueError):
        beam_search(decoder, vocab, features, 0, 6)


def test_whole_endings_never_end_a_caption_mid_phrase():
    """<end> is ruled out after "on", "a", "and" ... and after "a red"; without the rule such endings occur."""
    from captioner.decoding import sample
    from captioner.grammar import broken_ending

    config, decoder = _random_decoder(vocab_size=12, seed=5)
    vocab = Vocabulary(list(SPECIALS) + ["a", "on", "and", "red", "dog", "grass", "runs", "the"])
    bias = decoder.logits.bias.numpy()
    bias[2] = 1.5  # <end> likely at every step
    decoder.logits.bias.assign(bias)
    features = np.random.default_rng(3).random((40, _regions(config), 512)).astype(np.float32)

    def endings(whole):
        caps = greedy(decoder, vocab, features, 8, whole_endings=whole)
        caps += [beam_search(decoder, vocab, f, 3, 8, whole_endings=whole) for f in features[:10]]
        caps += [beam_search(decoder, vocab, f, 3, 8, whole_endings=whole).alternatives[0] for f in features[:10]]
        words = [c.words for c in caps if c.ended]
        drawn = sample(decoder, vocab, features[:10], 8, 8, np.random.default_rng(0), whole_endings=whole)
        words += [vocab.decode(row[1:]) for row in drawn if vocab.end_id in row[1:]]
        return sum(map(broken_ending, words)), len(words)

    broken, total = endings(False)
    assert broken > 0 and total > 50  # the random decoder does end on "on", "a", "a red" ... without the rule
    broken, total = endings(True)
    assert broken == 0 and total > 40


def test_ending_rule_on_ids():
    from captioner.grammar import EndingRule

    vocab = Vocabulary(list(SPECIALS) + ["a", "red", "dog", "on"])
    rule = EndingRule(vocab.words)
    ids = vocab.index
    last = np.array([ids["a"], ids["red"], ids["red"], ids["dog"], ids["on"]])
    before = np.array([vocab.start_id, ids["a"], ids["dog"], ids["red"], ids["dog"]])
    assert rule.may_not_end(last, before).tolist() == [True, True, False, False, True]


@pytest.mark.parametrize("whole_endings", [False, True])
def test_photos_searched_together_get_what_each_gets_alone(whole_endings):
    """The app batches the photos that arrive together: no photo's captions may change, or move to another."""
    from captioner.decoding import beam_search_batch

    config, decoder = _random_decoder(seed=5)
    vocab = Vocabulary(list(SPECIALS) + ["a", "on", "dog", "man", "red", "runs", "and", "grass"])
    bias = decoder.logits.bias.numpy()
    bias[2] = 1.0  # <end> about as likely as a word: the photos' searches end after different numbers of steps
    decoder.logits.bias.assign(bias)
    features = np.random.default_rng(4).normal(size=(6, _regions(config), 512)).astype(np.float32) * 3
    together = beam_search_batch(decoder, vocab, features, 3, 8, 0.7, with_steps=True, whole_endings=whole_endings)
    alone = [beam_search(decoder, vocab, f, 3, 8, 0.7, with_steps=True, whole_endings=whole_endings)
             for f in features]
    assert len(together) == len(features)
    assert len({tuple(c.words) for c in alone}) > 1  # different photos, different captions: a mix-up would show
    assert len({len(c.words) for c in alone}) > 1  # ... and searches of different lengths
    for t, a in zip(together, alone):
        for x, y in zip([t, *t.alternatives], [a, *a.alternatives], strict=True):
            assert x.words == y.words and x.ended == y.ended
            assert x.log_prob == pytest.approx(y.log_prob, abs=1e-4)
            np.testing.assert_allclose(x.attention, y.attention, atol=1e-5)
            np.testing.assert_allclose(x.gates, y.gates, atol=1e-5)
            assert [[w for w, _ in s] for s in x.steps] == [[w for w, _ in s] for s in y.steps]


def test_largest_is_a_stable_sorts_first_k():
    """Beam search keeps the k best of beams x vocabulary without sorting them all; ties (common
    among -inf, the ruled-out words) must still go to the lowest index, as a stable sort gives."""
    from captioner.decoding import _largest

    rng = np.random.default_rng(0)
    for _ in range(2000):
        n, k = int(rng.integers(1, 60)), int(rng.integers(1, 8))
        values = rng.integers(-3, 3, n).astype(np.float64)
        values[rng.random(n) < 0.2] = -np.inf
        np.testing.assert_array_equal(_largest(values, k), np.argsort(-values, kind="stable")[:k])


def test_block_repeats_never_says_a_thing_twice():
    """With ``block_repeats`` no greedy, beam or sampled caption repeats itself ("a bike on a bike", "a a");
    without it the same decoder does, so the rule is what removes them."""
    from captioner.decoding import sample
    from captioner.grammar import repeats

    config, decoder = _random_decoder(vocab_size=12, seed=5)
    vocab = Vocabulary(list(SPECIALS) + ["a", "on", "and", "red", "dog", "grass", "runs", "the"])
    bias = decoder.logits.bias.numpy()
    bias[2] = -2.0  # <end> unlikely: long captions from 8 words repeat themselves
    decoder.logits.bias.assign(bias)
    features = np.random.default_rng(3).random((40, _regions(config), 512)).astype(np.float32)

    def captions(block):
        caps = greedy(decoder, vocab, features, 10, whole_endings=True, block_repeats=block)
        beams = [beam_search(decoder, vocab, f, 3, 10, whole_endings=True, block_repeats=block)
                 for f in features[:10]]
        words = [c.words for c in caps + beams + [b.alternatives[0] for b in beams]]
        drawn = sample(decoder, vocab, features[:10], 8, 10, np.random.default_rng(0), whole_endings=True,
                       block_repeats=block)
        return words + [vocab.decode(row[1:]) for row in drawn]

    said = captions(False)
    assert sum(map(repeats, said)) > 20  # without the rule this decoder loops
    said = captions(True)
    assert not any(map(repeats, said)) and len(said) == 140
    assert np.mean([len(w) for w in said]) > 4  # and still says something
