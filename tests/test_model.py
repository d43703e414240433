import dataclasses

import keras
import numpy as np
import pytest

from captioner.config import ModelConfig
from captioner.encoder import feature_shape
from captioner.model import DECODERS, AttentionDecoder, CaptionModel, SoftAttention, build_model

CONFIG = ModelConfig(image_size=64, embed_dim=16, lstm_units=24, attention_dim=12, dropout=0.0)
VOCAB = 20
GRID, _, WIDTH = feature_shape(CONFIG)
REGIONS = GRID * GRID  # L: 16 for a 64 x 64 photo


def _inputs(batch=3, steps=5, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.random((batch, REGIONS, WIDTH)).astype(np.float32)
    tokens = rng.integers(4, VOCAB, (batch, steps)).astype(np.int32)
    tokens[:, 0] = 1  # <start>
    return features, tokens


def test_shapes_and_attention_rows_sum_to_one():
    model = build_model(CONFIG, VOCAB)
    features, tokens = _inputs()
    logits, alphas = model.decoder(features, tokens)
    assert logits.shape == (3, 5, VOCAB)
    assert alphas.shape == (3, 5, REGIONS)
    np.testing.assert_allclose(np.sum(alphas, -1), 1.0, rtol=1e-5)
    assert (np.asarray(alphas) >= 0).all()


@pytest.mark.parametrize("kind", sorted(DECODERS))
def test_teacher_forcing_uses_the_same_step_as_decoding(kind):
    config = dataclasses.replace(CONFIG, decoder=kind)
    decoder = build_model(config, VOCAB).decoder
    assert isinstance(decoder, DECODERS[kind])
    features, tokens = _inputs()
    logits, alphas = decoder(features, tokens)
    assert logits.shape == (3, 5, VOCAB) and alphas.shape == (3, 5, REGIONS if kind == "attention" else 0)
    h, c, projected = decoder.prepare(features)
    for t in range(tokens.shape[1]):
        step_logits, h, c, alpha, beta = decoder.step(tokens[:, t], h, c, features, projected)
        np.testing.assert_allclose(step_logits, logits[:, t], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(alpha, alphas[:, t], rtol=1e-4, atol=1e-6)
        assert beta.shape == ((3, 1) if kind == "attention" else (3, 0))
        assert ((np.asarray(beta) > 0) & (np.asarray(beta) < 1)).all()  # a sigmoid gate (vacuous when empty)


@pytest.mark.parametrize("kind", sorted(DECODERS))
def test_each_decoder_round_trips_its_config_and_weights(kind, tmp_path):
    config = dataclasses.replace(CONFIG, decoder=kind)
    model = build_model(config, VOCAB)
    clone = CaptionModel.from_config(model.get_config())
    assert type(clone.decoder) is DECODERS[kind] and clone.decoder.get_config() == model.decoder.get_config()
    assert keras.saving.get_registered_name(DECODERS[kind]) == f"captioner>{DECODERS[kind].__name__}"
    model.save_weights(tmp_path / "d.weights.h5")
    other = build_model(config, VOCAB)
    other.load_weights(tmp_path / "d.weights.h5")
    features, tokens = _inputs()
    np.testing.assert_array_equal(other.decoder(features, tokens)[0], model.decoder(features, tokens)[0])


def test_the_three_decoders_differ_in_how_the_photo_enters():
    """Inject: the photo sets the state; merge: the state starts at zero and the photo joins at the output."""
    features, tokens = _inputs()
    for kind in ("inject", "merge"):
        decoder = build_model(dataclasses.replace(CONFIG, decoder=kind), VOCAB).decoder
        h, c, projected = (np.asarray(x) for x in decoder.prepare(features))
        if kind == "inject":
            assert np.abs(h).sum() > 0 and projected.shape == (3, 0)
        else:
            assert not h.any() and not c.any() and projected.shape == (3, CONFIG.lstm_units)
        other = features.copy()
        other[0] += 1.0  # a different photo changes that photo's words only
        a, b = np.asarray(decoder(features, tokens)[0]), np.asarray(decoder(other, tokens)[0])
        assert not np.allclose(a[0], b[0]) and np.allclose(a[1:], b[1:])


def test_get_config_round_trips():
    attention = SoftAttention(7, name="att")
    assert SoftAttention.from_config(attention.get_config()).get_config() == attention.get_config()
    decoder = build_model(CONFIG, VOCAB).decoder
    clone = AttentionDecoder.from_config(decoder.get_config())
    assert clone.get_config() == decoder.get_config()
    model = build_model(CONFIG, VOCAB, alpha_c=0.5, label_smoothing=0.1)
    again = CaptionModel.from_config(model.get_config())
    assert again.alpha_c == 0.5 and again.label_smoothing == 0.1
    assert again.decoder.get_config()["lstm_units"] == CONFIG.lstm_units
    # registered under the fixed package name
    assert keras.saving.get_registered_name(AttentionDecoder) == "captioner>AttentionDecoder"


def test_weights_save_load_gives_identical_outputs(tmp_path):
    model = build_model(CONFIG, VOCAB)
    model.save_weights(tmp_path / "d.weights.h5")
    other = build_model(CONFIG, VOCAB)
    features, tokens = _inputs()
    assert not np.allclose(other.decoder(features, tokens)[0], model.decoder(features, tokens)[0])
    other.load_weights(tmp_path / "d.weights.h5")
    np.testing.assert_array_equal(other.decoder(features, tokens)[0], model.decoder(features, tokens)[0])


def test_loss_ignores_padding():
    model = build_model(CONFIG, VOCAB, alpha_c=0.0)
    features, tokens = _inputs(steps=4)
    captions = np.concatenate([tokens, np.full((3, 1), 2, np.int32)], axis=1)  # ... <end>
    padded = np.concatenate([captions, np.zeros((3, 6), np.int32)], axis=1)  # + <pad> x 6
    loss, xent, _ = model.caption_losses(features, captions, training=False)
    loss_p, xent_p, _ = model.caption_losses(features, padded, training=False)
    np.testing.assert_allclose(float(xent_p), float(xent), rtol=1e-5)


def test_cross_entropy_is_the_mean_negative_log_likelihood_of_the_real_next_words():
    model = build_model(CONFIG, VOCAB, alpha_c=0.0)
    features, tokens = _inputs(steps=4)
    captions = np.concatenate([tokens, np.full((3, 1), 2, np.int32), np.zeros((3, 2), np.int32)], axis=1)
    captions[0, 3:] = [2, 0, 0, 0]  # a shorter first caption
    _, xent, _ = model.caption_losses(features, captions, training=False)
    logits, _ = model.decoder(features, captions[:, :-1])
    log_p = keras.ops.convert_to_numpy(keras.ops.log_softmax(logits, axis=-1))
    targets = captions[:, 1:]
    real = targets != 0
    picked = np.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
    assert float(xent) == pytest.approx(-picked[real].mean(), rel=1e-5)
    smoothed = build_model(CONFIG, VOCAB, alpha_c=0.0, label_smoothing=1e-9)  # the one-hot path, same weights
    smoothed.set_weights(model.get_weights())
    assert float(smoothed.caption_losses(features, captions, training=False)[1]) == pytest.approx(float(xent), rel=1e-5)


def test_attention_penalty_counts_only_with_lambda():
    features, tokens = _inputs()
    captions = np.concatenate([tokens, np.full((3, 1), 2, np.int32)], axis=1)
    plain = build_model(CONFIG, VOCAB, alpha_c=0.0)
    penalised = build_model(CONFIG, VOCAB, alpha_c=1.0)
    penalised.set_weights(plain.get_weights())
    loss0, xent0, _ = plain.caption_losses(features, captions, training=False)
    loss1, xent1, _ = penalised.caption_losses(features, captions, training=False)
    assert float(loss0) == pytest.approx(float(xent0))
    assert float(loss1) > float(xent1)  # sum over t of alpha is 6, not 1, for every region


def test_vocab_size_must_be_set():
    with pytest.raises(ValueError, match="vocab_size"):
        build_model(CONFIG, 0)


def test_attention_penalty_ignores_padded_steps():
    """Eq. 14 sums alpha over the real steps only: padding after <end> changes neither term."""
    model = build_model(CONFIG, VOCAB, alpha_c=1.0)
    features, tokens = _inputs(steps=4)
    captions = np.concatenate([tokens, np.full((3, 1), 2, np.int32)], axis=1)  # ... <end>
    padded = np.concatenate([captions, np.zeros((3, 6), np.int32)], axis=1)  # + <pad> x 6
    loss, xent, _ = model.caption_losses(features, captions)
    loss_p, xent_p, _ = model.caption_losses(features, padded)
    penalty, penalty_p = float(loss) - float(xent), float(loss_p) - float(xent_p)
    assert penalty > 0.01  # 4 real steps: sum_t alpha_ti is far from 1 for most regions
    assert penalty_p == pytest.approx(penalty, rel=1e-4)
    # Without the mask the 6 padded steps would add attention to every region: a different penalty.
    _, alphas = model.decoder(features, padded[:, :-1])
    unmasked = np.mean(np.square(1.0 - np.sum(np.asarray(alphas), axis=1)))
    assert abs(unmasked - penalty) > 0.01


@pytest.mark.parametrize("kind", sorted(DECODERS))
def test_each_decoder_learns_to_say_each_photos_caption(kind):
    """Six photos, six captions that share words ("a red square on blue"...): after training on them each
    decoder's greedy decoding says every photo's caption. The features are made to differ as photos do
    (a random VGG16's mean features of the synthetic shapes are all alike, cosine 0.999: no test of a decoder
    that reads the mean)."""
    from captioner.decoding import greedy
    from captioner.training.batches import encode_captions
    from captioner.vocab import Vocabulary

    captions = [c.split() for c in ("a red square on blue", "a red circle on green", "a white square on green",
                                    "a white circle on blue", "two dogs on grass", "a red circle")]
    vocab = Vocabulary.build(captions)
    rng = np.random.default_rng(0)
    features = rng.random((len(captions), REGIONS, WIDTH)).astype(np.float32) * 0.2
    for i in range(len(captions)):
        features[i, :, 8 * i:8 * i + 8] += 1.0  # each photo lights up its own channels in every region
    ids = encode_captions(captions, vocab)
    tokens = np.zeros((len(ids), max(map(len, ids))), np.int32)
    for i, row in enumerate(ids):
        tokens[i, :len(row)] = row
    keras.utils.set_random_seed(0)
    model = build_model(dataclasses.replace(CONFIG, decoder=kind), len(vocab), alpha_c=0.0)
    model.compile(optimizer=keras.optimizers.Adam(2e-2))
    model.fit({"features": features, "captions": tokens}, epochs=60, batch_size=len(ids), verbose=0)
    said = [c.words for c in greedy(model.decoder, vocab, features, max_length=8)]
    assert said == captions
