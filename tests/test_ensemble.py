"""Ensembles: decoders trained apart choose each word together (captioner.model.EnsembleDecoder,
captioner.ensemble)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from captioner.config import ModelConfig
from captioner.decoding import beam_search_batch, greedy
from captioner.encoder import feature_shape
from captioner.model import EnsembleDecoder, build_decoder, build_model
from captioner.pipeline import DECODER_WEIGHTS, Captioner, ModelFolderError
from captioner.vocab import SPECIALS, Vocabulary

SMALL = ModelConfig(image_size=32, embed_dim=8, lstm_units=8, attention_dim=8, dropout=0.0)


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _members(k=2, vocab_size=12, config=SMALL):
    import keras

    decoders = []
    for seed in range(k):
        keras.utils.set_random_seed(seed)
        decoders.append(build_decoder(config, vocab_size))
    return decoders


def _ensemble_of(decoders, config=SMALL):
    """An ensemble built from ``config`` (as a folder loads it), holding the given decoders' weights."""
    import dataclasses

    model = build_model(dataclasses.replace(config, ensemble=len(decoders)), decoders[0].vocab_size)
    for member, decoder in zip(model.decoder.members, decoders):
        member.set_weights(decoder.get_weights())
    return model.decoder


def _features(config=SMALL, photos=3, seed=0):
    grid, _, width = feature_shape(config)
    return np.random.default_rng(seed).normal(size=(photos, grid * grid, width)).astype("float32")


def test_each_word_is_chosen_from_the_mean_of_the_members_distributions():
    """Step by step, the ensemble's distribution is the mean of its members' (each run with its own state),
    and its attention the mean of theirs."""
    members = _members(3)
    ensemble = _ensemble_of(members)
    features = _features()
    h, c, projected = (np.asarray(x) for x in ensemble.prepare(features))
    own = [[np.asarray(x) for x in m.prepare(features)] for m in members]
    tokens = np.array([Vocabulary.start_id] * 3)
    for t in range(4):
        logits, h, c, alpha, beta = (np.asarray(x) for x in ensemble.step(tokens, h, c, features, projected))
        steps = [[np.asarray(x) for x in m.step(tokens, hk, ck, features, pk)] for m, (hk, ck, pk) in zip(members, own)]
        mean = np.mean([softmax(s[0], axis=-1) for s in steps], axis=0)  # (B, V)
        np.testing.assert_allclose(np.exp(logits), mean, atol=1e-6)
        np.testing.assert_allclose(np.exp(logits).sum(axis=-1), 1.0, atol=1e-5)  # log-probabilities
        np.testing.assert_allclose(alpha, np.mean([s[3] for s in steps], axis=0), atol=1e-6)
        np.testing.assert_allclose(beta, np.mean([s[4] for s in steps], axis=0), atol=1e-6)
        # every member's own state travels in its slice of (B, K n)
        np.testing.assert_allclose(h, np.concatenate([s[1] for s in steps], axis=-1), atol=1e-6)
        own = [(s[1], s[2], p) for s, (_, _, p) in zip(steps, own)]
        tokens = np.argmax(logits, axis=-1)


def test_teacher_forcing_equals_stepping():
    ensemble = _ensemble_of(_members(2))
    features = _features()
    tokens = np.random.default_rng(1).integers(4, 12, size=(3, 5))
    tokens[:, 0] = Vocabulary.start_id
    logits, alphas = (np.asarray(x) for x in ensemble(features, tokens))
    h, c, projected = ensemble.prepare(features)
    for t in range(tokens.shape[1]):
        step, h, c, alpha, _ = ensemble.step(tokens[:, t], h, c, features, projected)
        np.testing.assert_allclose(np.asarray(step), logits[:, t], atol=1e-5)
        np.testing.assert_allclose(np.asarray(alpha), alphas[:, t], atol=1e-6)


def test_an_ensemble_of_one_decoder_twice_captions_as_that_decoder():
    """Greedy and beam search drive an ensemble as they drive one decoder: two copies of the same decoder
    give its own captions, log-probabilities and attention."""
    decoder = _members(1)[0]
    ensemble = _ensemble_of([decoder, decoder])
    vocab = Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(8)])
    features = _features(photos=4)
    for one, two in zip(greedy(decoder, vocab, features, 6), greedy(ensemble, vocab, features, 6)):
        assert one.words == two.words and one.log_prob == pytest.approx(two.log_prob, abs=1e-4)
        np.testing.assert_allclose(one.attention, two.attention, atol=1e-5)
    for one, two in zip(beam_search_batch(decoder, vocab, features, 3, 6), beam_search_batch(ensemble, vocab, features, 3, 6)):
        assert one.words == two.words and one.score == pytest.approx(two.score, abs=1e-4)
        assert [a.words for a in one.alternatives] == [a.words for a in two.alternatives]


def test_members_must_be_of_one_design():
    a = _members(1)[0]
    import dataclasses

    b = build_decoder(dataclasses.replace(SMALL, lstm_units=16), 12)
    with pytest.raises(ValueError, match="one design and size"):
        EnsembleDecoder([a, b])
    with pytest.raises(ValueError, match="at least 2"):
        EnsembleDecoder([a])
    with pytest.raises(ValueError, match="at least 1, not 0"):
        build_decoder(dataclasses.replace(SMALL, ensemble=0), 12)


@pytest.fixture(scope="module")
def second_member(tiny_model_dir, tmp_path_factory):
    """A second folder on the tiny model's encoder and vocabulary: its decoder's weights moved a little, as a
    decoder trained from another random start would differ."""
    folder = tmp_path_factory.mktemp("member") / "model"
    shutil.copytree(tiny_model_dir, folder)
    config = ModelConfig.load(folder / "config.json")
    vocab = Vocabulary.load(folder / "vocab.json")
    model = build_model(config, len(vocab))
    model.load_weights(folder / DECODER_WEIGHTS)
    rng = np.random.default_rng(0)
    model.set_weights([w + 0.02 * rng.standard_normal(w.shape).astype(w.dtype) for w in model.get_weights()])
    from captioner.model import save_model_weights

    for old in folder.glob("decoder*.weights.*"):
        old.unlink()
    save_model_weights(model, folder / DECODER_WEIGHTS, max_shard_size=0.01)
    return folder


@pytest.fixture(scope="module")
def combined(tiny_model_dir, second_member, synthetic_data, tmp_path_factory):
    from captioner.ensemble import combine

    root, _ = synthetic_data
    out = tmp_path_factory.mktemp("ensemble") / "model"
    metrics = combine([tiny_model_dir, second_member], root, out, beam_sizes=(1, 3),
                      cache_root=tmp_path_factory.mktemp("cache"))
    return out, metrics


def test_combined_folder_loads_and_captions_as_its_members_together(combined, tiny_model_dir, second_member,
                                                                     synthetic_data, tmp_path):
    out, metrics = combined
    root, truth = synthetic_data
    loaded = Captioner.load(out, compute_dtype="float32")
    assert loaded.config.ensemble == 2 and isinstance(loaded.decoder, EnsembleDecoder)
    members = [Captioner.load(f, compute_dtype="float32") for f in (tiny_model_dir, second_member)]
    # the folder holds the members' weights as float16, loaded back as their float32 values, member k in place k
    import h5py

    from captioner.model import round_to_float16

    stored = []
    for shard in out.glob("decoder_*.weights.h5"):
        with h5py.File(shard, "r") as f:
            f.visititems(lambda _, o: stored.append(o.dtype) if isinstance(o, h5py.Dataset) else None)
    assert stored and set(stored) == {np.dtype("float16")}
    for member, alone in zip(loaded.decoder.members, members):
        round_to_float16(alone.model)
        assert all(np.array_equal(a, b) for a, b in zip(member.get_weights(), alone.decoder.get_weights()))
        assert member.get_weights()[0].dtype == np.float32
    for name in list(truth)[:3]:
        description = loaded.describe(root / "Images" / name, with_steps=True)
        features = loaded.features(loaded.read(root / "Images" / name).pixels[None])
        by_hand = greedy(_ensemble_of([m.decoder for m in members], members[0].config), loaded.vocab, features,
                         loaded.config.max_length)[0]
        assert loaded.greedy_batch(features)[0].words == by_hand.words
        assert description.caption.words and description.hedged
        grid, _, _ = feature_shape(loaded.config)
        assert description.attention.shape == (len(description.words), grid, grid)
    # scored on dev, each member and the ensemble, then test once; every member's record is kept
    assert set(metrics["dev"]) == {"member0", "member1", "ensemble"}
    from captioner.evaluate import evaluate_folder

    # each member scored as its own folder scores (rounding its weights to float16 changes no tiny caption)
    for k, folder in enumerate((tiny_model_dir, second_member)):
        alone = evaluate_folder(folder, root, "dev", (1, 3), tmp_path / "cache", progress=False,
                                compute_dtype="float32")
        for beam in ("1", "3"):
            assert metrics["dev"][f"member{k}"][beam]["bleu4"] == pytest.approx(alone[int(beam)]["bleu4"])
            assert metrics["dev"][f"member{k}"][beam]["cider"] == pytest.approx(alone[int(beam)]["cider"])
    assert set(metrics["test"]) == {"1", "3"} and metrics["stage"] == "ensemble"
    assert [m["folder"] for m in metrics["members"]] == [str(tiny_model_dir), str(second_member)]
    assert metrics["members"][0]["metrics"] == json.loads((tiny_model_dir / "metrics.json").read_text())
    assert json.loads((out / "metrics.json").read_text())["test"] == metrics["test"]
    from captioner.export import ensemble_story

    assert "keeps no training record" in ensemble_story({**metrics, "members": [
        {**metrics["members"][0], "metrics": {}}, metrics["members"][1]]})  # a member folder without metrics.json
    card = (out / "README.md").read_text()
    assert "2 LSTM decoders" in card and str(second_member) in card and "Together, dev beam 3" in card
    config = ModelConfig.load(out / "config.json")
    assert config.hedge_possible <= config.hedge_sure
    assert config.hedge_sure == round(metrics["dev_hedging"]["hedge_sure"], 4)  # calibrated on its own captions


def test_folders_that_cannot_join_are_named(tiny_model_dir, second_member, combined, tmp_path, encoder_weights):
    from captioner.ensemble import check_members
    from captioner.training.scst import start_from_folder

    out, _ = combined
    with pytest.raises(ModelFolderError, match="at least two"):
        check_members([tiny_model_dir])
    with pytest.raises(ModelFolderError, match="is an ensemble already"):
        check_members([tiny_model_dir, out])
    with pytest.raises(ModelFolderError, match="trains no further"):
        start_from_folder(out)
    other_words = tmp_path / "words"
    shutil.copytree(second_member, other_words)
    vocab = json.loads((other_words / "vocab.json").read_text())
    vocab["words"][-1] = "zebra"
    (other_words / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ModelFolderError, match="another vocabulary"):
        check_members([tiny_model_dir, other_words])
    other_encoder = tmp_path / "encoder"
    shutil.copytree(second_member, other_encoder)
    from captioner.encoder import build_encoder, load_encoder_weights, save_encoder_weights_float16
    from captioner.pipeline import ENCODER_WEIGHTS

    config = ModelConfig.load(other_encoder / "config.json")
    encoder = build_encoder(config)
    load_encoder_weights(encoder, other_encoder / ENCODER_WEIGHTS)
    layer = next(layer for layer in encoder.layers if layer.weights)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias + 0.5])
    for old in other_encoder.glob("encoder*.weights.*"):
        old.unlink()
    save_encoder_weights_float16(encoder, config, other_encoder / ENCODER_WEIGHTS, max_shard_size=0.01)
    with pytest.raises(ModelFolderError, match="another encoder"):
        check_members([tiny_model_dir, other_encoder])
    other_design = tmp_path / "design"
    shutil.copytree(second_member, other_design)
    (other_design / "config.json").write_text(ModelConfig.load(other_design / "config.json").to_json()
                                              .replace('"decoder": "attention"', '"decoder": "merge"'))
    with pytest.raises(ModelFolderError, match="another design.*decoder merge not attention"):
        check_members([tiny_model_dir, other_design])


def test_the_command_names_a_folder_that_cannot_join(tiny_model_dir, combined, synthetic_data, tmp_path, capsys):
    from captioner.__main__ import main

    root, _ = synthetic_data
    out, _ = combined
    assert main(["ensemble", "--models", str(tiny_model_dir), str(out), "--data-dir", str(root),
                 "--out", str(tmp_path / "new")]) == 2
    assert f"{out} is an ensemble already" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_without_out_the_command_scores_dev_alone_and_writes_nothing(tiny_model_dir, second_member, combined,
                                                                    synthetic_data, tmp_path, capsys, monkeypatch):
    """Choosing between sets of members happens on dev: without --out, the test split is never scored."""
    import captioner.evaluate
    from captioner.__main__ import main

    root, _ = synthetic_data
    _, metrics = combined
    scored = []
    score = captioner.evaluate.score_features
    monkeypatch.setattr(captioner.evaluate, "score_features",
                        lambda *a, **k: scored.append(len(a[1])) or score(*a, **k))
    before = set(tmp_path.iterdir())
    assert main(["ensemble", "--models", str(tiny_model_dir), str(second_member), "--data-dir", str(root),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert len(scored) == 3  # member0, member1 and the ensemble, on dev; the written ensemble also scores test
    printed = capsys.readouterr().out
    row = metrics["dev"]["ensemble"]["3"]
    assert (f"dev beam 3, ensemble: BLEU-1 {100 * row['bleu1']:.2f}, BLEU-4 {100 * row['bleu4']:.2f}, "
            f"CIDEr-D {100 * row['cider']:.2f}") in printed
    assert "nothing written, test not read" in printed and "test split" not in printed
    assert set(tmp_path.iterdir()) - before <= {tmp_path / "cache"}


def test_compare_models_says_an_ensemble_is_several_decoders(combined, tiny_model_dir, synthetic_data):
    """Teachers comparing designs see that the attention model is two decoders, not one."""
    from captioner.teaching import DESIGNS, compare
    from captioner.views import compare_html

    root, truth = synthetic_data
    out, metrics = combined
    photo = root / "Images" / next(iter(truth))
    rows = compare({"attention": Captioner.load(out, compute_dtype="float32"),
                    "single": Captioner.load(tiny_model_dir, compute_dtype="float32")}, photo)
    assert [r.decoders for r in rows] == [2, 1]
    assert rows[0].summary.startswith(DESIGNS["attention"]) and "2 such decoders, trained apart" in rows[0].summary
    assert "such decoders" not in rows[1].summary
    assert rows[0].test_scores["bleu4"] == metrics["test"]["3"]["bleu4"]
    assert "2 such decoders, trained apart, choose each word together" in compare_html(rows)
