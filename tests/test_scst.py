"""Self-critical training: CIDEr-D as coco-caption computes it, sampling, rewards, and a reward that rises."""
from __future__ import annotations

import random

import numpy as np
import pytest

from captioner.cider import CiderD, corpus_cider
from captioner.config import TrainConfig
from captioner.decoding import _banned, _forbid_end, _forbid_repeats, blocked_ends, blocked_repeats, sample
from captioner.grammar import broken_ending


def _random_corpus(seed=0, photos=40):
    rng = random.Random(seed)
    words = "a dog man runs on the grass red ball in water two people sitting bench".split()
    refs = [[[rng.choice(words) for _ in range(rng.randint(3, 12))] for _ in range(5)] for _ in range(photos)]
    hyps = [[rng.choice(words) for _ in range(rng.randint(1, 12))] for _ in range(photos)]
    hyps[1] = []  # an empty caption scores 0, as in coco-caption
    hyps[2] = refs[2][0]  # one that equals a reference
    return refs, hyps


def test_cider_d_equals_pycocoevalcap_on_a_fixed_set():
    from pycocoevalcap.cider.cider import Cider

    refs, hyps = _random_corpus()
    theirs, per_photo = Cider().compute_score({i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)},
                                              {i: [" ".join(h)] for i, h in enumerate(hyps)})
    assert corpus_cider(refs, hyps) == pytest.approx(theirs, rel=1e-12)
    np.testing.assert_allclose(CiderD(refs).scores(hyps, range(len(hyps))), per_photo, rtol=1e-12)


def test_cider_d_prefers_the_right_photo_and_clips_repeats():
    refs, _ = _random_corpus(photos=10)
    scorer = CiderD(refs)
    right = refs[3][1]
    assert scorer.score(right, 3) > scorer.score(right, 4)
    assert scorer.score(right * 3, 3) < scorer.score(right, 3)  # saying it three times does not pay
    assert scorer.score([], 3) == 0.0


def test_samples_are_captions_of_the_vocabulary_that_end_whole(tiny_captioner, synthetic_data):
    root, truth = synthetic_data
    c = tiny_captioner
    from captioner.image import load_image, preprocess

    pixels = np.stack([preprocess(load_image(root / "Images" / n), c.config) for n in list(truth)[:3]])
    features = c.features(pixels)
    tokens = sample(c.decoder, c.vocab, features, 4, c.config.max_length, np.random.default_rng(0),
                    whole_endings=True)
    assert tokens.shape == (12, c.config.max_length + 2)
    assert (tokens[:, 0] == c.vocab.start_id).all()
    specials = {c.vocab.start_id, c.vocab.unk_id}
    for row in tokens:
        words = c.vocab.decode(row[1:])
        assert words and not specials & set(row[1:].tolist())
        ended = c.vocab.end_id in row[1:]
        assert not (ended and broken_ending(words))
    again = sample(c.decoder, c.vocab, features, 4, c.config.max_length, np.random.default_rng(0), True)
    np.testing.assert_array_equal(tokens, again)  # the generator alone decides the draws


def test_scst_raises_the_reward_of_a_half_trained_model(tmp_path, synthetic_data, encoder_weights, tiny_config):
    """Cross-entropy for a few epochs (captions still wrong), then SCST: the sampled captions' CIDEr-D rises."""
    from captioner.training import train
    from captioner.training.checkpoints import WEIGHTS
    from captioner.training.scst import SelfCriticalBatches, train_scst

    root, _ = synthetic_data
    tcfg = TrainConfig(epochs=3, batch_size=16, learning_rate=1e-2, alpha_c=0.0, min_word_count=1, patience=30,
                       seed=0, scst_epochs=30, scst_learning_rate=1e-3, scst_samples=16, scst_photos=12)
    _, xe = train(root, tmp_path / "run", tiny_config, tcfg, encoder_weights, tmp_path / "cache", dtype="float32",
                  progress=False)
    model, run = train_scst(root, tmp_path / "run" / "scst", tiny_config, xe.vocab, xe.best_checkpoint / WEIGHTS,
                            tcfg, encoder_weights, tmp_path / "cache", earlier=[xe.summary()], dtype="float32",
                            progress=False)
    rewards = [h["reward"] for h in run.history]  # the mean CIDEr-D of the captions sampled in each epoch
    assert len(rewards) == 30 and run.stage == "scst" and run.monitor == "dev_cider"
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.15, rewards
    start = run.earlier[-1]["dev"]["dev_cider"]
    assert run.best_epoch > 0 and run.best_score > start, (start, run.history)  # greedy dev CIDEr-D rose too
    # each photo's advantages sum to zero: the baseline is the mean of the photo's other samples
    batches = SelfCriticalBatches(model.decoder, run.vocab, run.features("train"),
                                  CiderD(run.references("train")), 4, 4, tiny_config.max_length)
    batch = batches[0]
    np.testing.assert_allclose(batch["advantage"].reshape(-1, 4).sum(axis=1), 0.0, atol=1e-5)
    assert batch["captions"].shape[0] == batch["features"].shape[0] == 16


def test_self_critical_training_needs_two_samples():
    from captioner.training.scst import SelfCriticalBatches

    with pytest.raises(ValueError, match="at least 2 samples"):
        SelfCriticalBatches(None, None, np.zeros((4, 1, 1)), None, 2, 1, 8)


@pytest.mark.parametrize("block", [False, True])
def test_policy_gradient_loss_is_minus_the_advantage_weighted_log_probability_of_the_samples(block):
    """The loss reads the very log-probabilities the sampler drew from (no special tokens, no ``<end>``
    where the ending rule forbade it, with ``block_repeats`` no word that would repeat the caption,
    renormalised), and a step along its gradient makes a caption with
    a positive advantage likelier and one with a negative advantage less likely."""
    import keras

    from captioner.config import ModelConfig
    from captioner.encoder import feature_shape
    from captioner.model import SelfCriticalModel, build_decoder
    from captioner.vocab import Vocabulary

    config = ModelConfig(image_size=64, embed_dim=16, lstm_units=24, attention_dim=12, dropout=0.5)
    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "on", "blue", "dog", "grass", "runs"]
                       + [f"w{i}" for i in range(10)])
    keras.utils.set_random_seed(0)
    model = SelfCriticalModel(build_decoder(config, len(vocab)))
    model.build()
    grid, _, width = feature_shape(config)
    features = np.random.default_rng(1).random((2, grid * grid, width)).astype(np.float32)
    tokens = sample(model.decoder, vocab, features, 3, 6, np.random.default_rng(2), whole_endings=True,
                    block_repeats=block)  # (6, 8)
    repeated = np.repeat(features, 3, axis=0)
    # the log-probability of each sampled word, step by step under the sampler's own rules
    h, c, projected = model.decoder.prepare(repeated)
    step_log_p = np.zeros(tokens[:, 1:].shape, np.float32)
    forbidden = np.zeros(tokens[:, 1:].shape, bool)
    ruled_out = []  # per step, per caption: the ids the repeat rule took away
    for t in range(tokens.shape[1] - 1):
        logits, h, c, _, _ = model.decoder.step(tokens[:, t], h, c, repeated, projected)
        log_p = np.array(keras.ops.log_softmax(logits, axis=-1))
        log_p[:, _banned(vocab)] = -np.inf
        _forbid_end(log_p, vocab, t, True, tokens[:, t], tokens[:, t - 1] if t else tokens[:, 0])
        finite = np.isfinite(log_p)
        _forbid_repeats(log_p, vocab, tokens[:, 1:t + 1].tolist(), block)
        ruled_out.append([set(np.flatnonzero(finite[i] & ~np.isfinite(log_p[i]))) for i in range(len(tokens))])
        forbidden[:, t] = np.isinf(log_p[:, vocab.end_id])
        log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))  # renormalised over what could be drawn
        step_log_p[:, t] = log_p[np.arange(len(tokens)), tokens[:, t + 1]]
    mask = tokens[:, 1:] != vocab.pad_id
    blocked = blocked_ends(vocab, tokens, whole_endings=True)
    np.testing.assert_array_equal(blocked[mask], forbidden[mask])  # the rule, for whole captions at once
    assert blocked[mask].sum() > len(tokens)  # more than the first step of each caption
    repeat_blocked = blocked_repeats(vocab, tokens, block)  # (6, 7, R)
    for i, t in zip(*np.nonzero(mask)):  # at every scored step, exactly the words the sampler's rule took away
        assert set(repeat_blocked[i, t][repeat_blocked[i, t] >= 0]) == ruled_out[t][i]
    assert (repeat_blocked[mask] >= 0).any() == block
    advantage = np.array([1.0, -1.0, 0.0, 0.5, -0.5, 0.0], np.float32)
    batch = {"features": repeated.astype(np.float16), "captions": tokens, "advantage": advantage,
             "end_blocked": blocked.astype(np.float32), "reward": np.ones(6, np.float32)}
    if block:
        batch["repeat_blocked"] = repeat_blocked
    loss = float(model.compute_loss(batch, y_pred=model(batch)))  # dropout off, whatever config.dropout
    expected = -(advantage[:, None] * np.where(mask, step_log_p, 0.0)).sum() / mask.sum()
    assert loss == pytest.approx(expected, rel=1e-4, abs=1e-6)

    def caption_log_p():
        logits, _ = model(batch)
        log_p = np.asarray(keras.ops.log_softmax(model.sampling_policy(logits, blocked, batch.get("repeat_blocked")),
                                                 axis=-1))
        rows = np.take_along_axis(log_p, tokens[:, 1:, None], axis=-1)[..., 0]
        return (rows * mask).sum(axis=1)

    before = caption_log_p()
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.train_on_batch(batch)
    after = caption_log_p()
    assert after[0] > before[0] and after[1] < before[1], (before, after)


def test_the_greedy_baseline_is_the_reward_of_each_photos_greedy_caption():
    import keras

    from captioner.config import ModelConfig
    from captioner.decoding import greedy
    from captioner.encoder import feature_shape
    from captioner.model import build_decoder
    from captioner.training.scst import SelfCriticalBatches
    from captioner.vocab import Vocabulary

    config = ModelConfig(image_size=64, embed_dim=16, lstm_units=24, attention_dim=12, dropout=0.0)
    words = ["a", "on", "blue", "dog", "grass", "runs", "red", "ball"]
    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>"] + words)
    keras.utils.set_random_seed(0)
    decoder = build_decoder(config, len(vocab))
    grid, _, width = feature_shape(config)
    features = np.random.default_rng(1).random((6, grid * grid, width)).astype(np.float16)
    refs, _ = _random_corpus(photos=6)
    scorer = CiderD(refs)
    batches = SelfCriticalBatches(decoder, vocab, features, scorer, 3, 4, 6, baseline="greedy")
    batch = batches[0]
    photos = np.sort(batches.batches[0])
    said = [c.words for c in greedy(decoder, vocab, features[photos].astype(np.float32), 6, whole_endings=True)]
    expected = batch["reward"].reshape(3, 4) - scorer.scores(said, photos)[:, None]
    np.testing.assert_allclose(batch["advantage"], expected.reshape(-1), rtol=1e-5, atol=1e-6)
    assert SelfCriticalBatches(decoder, vocab, features, scorer, 3, 1, 6, baseline="greedy")[0]["advantage"].shape == (3,)
    with pytest.raises(ValueError, match="baseline"):
        SelfCriticalBatches(decoder, vocab, features, scorer, 3, 4, 6, baseline="best")


def test_the_reward_can_count_the_end_of_a_caption():
    """With ``reward_end`` a finished sample is scored with END_WORD after its words, against references
    that end with it: a caption that stops where people stop beats the same words cut off at the length
    limit, which the plain reward cannot tell apart."""
    import keras

    from captioner.config import ModelConfig
    from captioner.encoder import feature_shape
    from captioner.model import build_decoder
    from captioner.training.scst import END_WORD, SelfCriticalBatches
    from captioner.vocab import Vocabulary

    refs = [[["a", "dog", "runs", "on", "the", "grass"], ["a", "dog", "runs"], ["a", "brown", "dog", "runs"]],
            [["two", "people", "sitting", "on", "a", "bench"]] * 3]
    ended = CiderD([[r + [END_WORD] for r in rs] for rs in refs])
    words = ["a", "dog", "runs"]
    assert ended.score(words + [END_WORD], 0) > ended.score(words, 0) > 0
    assert ended.score(["a", "dog", "runs", "on", END_WORD], 0) < ended.score(words + [END_WORD], 0)

    config = ModelConfig(image_size=64, embed_dim=16, lstm_units=24, attention_dim=12, dropout=0.0)
    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "runs", "on", "the", "grass"])
    keras.utils.set_random_seed(0)
    grid, _, width = feature_shape(config)
    features = np.random.default_rng(1).random((2, grid * grid, width)).astype(np.float16)
    batches = SelfCriticalBatches(build_decoder(config, len(vocab)), vocab, features, ended, 2, 6, 3,
                                  reward_end=True)
    batch = batches[0]
    photos = np.repeat(np.sort(batches.batches[0]), 6)
    said = [vocab.decode(row[1:]) + ([END_WORD] if vocab.end_id in row[1:] else []) for row in batch["captions"]]
    assert any(w[-1] == END_WORD for w in said) and any(w[-1] != END_WORD for w in said)  # both kinds drawn
    np.testing.assert_allclose(batch["reward"], ended.scores(said, photos), rtol=1e-6)
    assert batches.rewarded([words], [True]) == [words + [END_WORD]]
    assert batches.rewarded([words], [False]) == [words]
