"""Block5 fine-tuning (issue 8): block5 on cached block4_pool features, photo batches, the stage end to end."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from captioner.config import TrainConfig


def test_block5_on_block4_pool_features_is_the_whole_encoder(encoder_weights, tiny_config):
    """The cut is exact: block4_pool of the encoder, then Block5 with the encoder's weights, gives block5_conv3."""
    from captioner.encoder import build_encoder, feature_shape, load_encoder_weights
    from captioner.model import BELOW_BLOCK5, Block5

    whole = build_encoder(tiny_config)
    load_encoder_weights(whole, encoder_weights)
    below = build_encoder(dataclasses.replace(tiny_config, encoder_layer=BELOW_BLOCK5))
    load_encoder_weights(below, encoder_weights)  # the whole encoder's file: its first layers
    grid, _, width = feature_shape(tiny_config)
    block5 = Block5(grid, width)
    block5.build()
    block5.load_from_encoder(whole)
    pixels = np.random.default_rng(0).normal(size=(3, 64, 64, 3)).astype(np.float32)
    rows = np.asarray(below(pixels)).reshape(3, grid * grid, width)
    expected = np.asarray(whole(pixels)).reshape(3, grid * grid, width)
    np.testing.assert_allclose(np.asarray(block5(rows)), expected, rtol=1e-4, atol=1e-5)

    # and back: weights stored in another encoder make that encoder give what block5 gives
    for conv in block5.convs:
        conv.set_weights([w * 1.5 for w in conv.get_weights()])
    other = build_encoder(tiny_config)
    load_encoder_weights(other, encoder_weights)
    block5.store_in_encoder(other)
    np.testing.assert_allclose(np.asarray(other(pixels)).reshape(3, grid * grid, width), np.asarray(block5(rows)),
                               rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.asarray(other(pixels)), np.asarray(whole(pixels)))


def test_photo_batches_hold_every_caption_of_their_photos_once():
    from captioner.training.batches import bucket_widths
    from captioner.training.finetune import PhotoBatches

    features = np.arange(10, dtype=np.float16)[:, None, None] * np.ones((10, 4, 2), np.float16)  # photo i holds i
    captions = [[[1] + [5 + i] * (1 + k + i % 3) + [2] for k in range(3)] for i in range(10)]
    captions[4].append([1] + [9] * 12 + [2])  # longer than max_length: left out
    captions[7][0] = [1] + [12] * 11 + [2]  # 11 words: its batch is padded to 11, the others to 10
    batches = PhotoBatches(features, captions, photos=3, max_length=11, seed=7)
    assert len(batches) == 3 and batches.dropped == 1  # 10 photos: three whole batches of 3
    seen = []
    for b in (batches[i] for i in range(len(batches))):
        photos = b["features"][:, 0, 0].astype(int)  # (P,)
        assert len(photos) == 3 and b["captions"].shape[0] == b["rows"].shape[0] == 9
        for caption, row in zip(b["captions"], b["rows"]):
            photo = photos[row]
            ids = [t for t in caption if t]
            assert ids in captions[photo] and set(ids[1:-1]) == {5 + photo}  # each caption beside its own photo
        seen += photos.tolist()
        longest = max(len([t for t in c if t]) for c in b["captions"]) - 2
        assert b["captions"].shape[1] - 2 == (11 if 7 in photos else 10) == next(
            w for w in bucket_widths(11) if longest <= w)
    assert len(set(seen)) == 9  # no photo twice in an epoch
    again = PhotoBatches(features, captions, photos=3, max_length=11, seed=7)
    np.testing.assert_array_equal(again[1]["captions"], batches[1]["captions"])
    again.start_at(1)
    assert [a.tolist() for a in again.batches] != [b.tolist() for b in batches.batches]  # reshuffled per epoch


@pytest.fixture(scope="module")
def half_trained(tmp_path_factory, synthetic_data, encoder_weights, tiny_config):
    """A decoder after 3 epochs of cross-entropy: it has not learnt the shapes yet."""
    from captioner.training import train
    from captioner.training.checkpoints import WEIGHTS

    root, _ = synthetic_data
    work = tmp_path_factory.mktemp("xe")
    tcfg = TrainConfig(epochs=3, batch_size=16, learning_rate=1e-2, alpha_c=0.0, min_word_count=1, patience=30,
                       seed=0)
    _, run = train(root, work / "run", tiny_config, tcfg, encoder_weights, work / "cache", dtype="float32",
                   progress=False)
    return run, run.best_checkpoint / WEIGHTS, work / "cache"


FINETUNE = TrainConfig(epochs=3, batch_size=16, alpha_c=0.0, min_word_count=1, patience=30, seed=0,
                       finetune_block5=8, finetune_learning_rate=1e-3, finetune_photos=4)


def test_finetuning_trains_block5_and_exports_the_encoder_it_chose(tmp_path, half_trained, synthetic_data,
                                                                   encoder_weights, tiny_config):
    """Dev CIDEr-D rises; block5 changes and blocks 1-4 do not; the exported folder captions with it."""
    import h5py

    from captioner.export import export_run
    from captioner.pipeline import Captioner
    from captioner.training.finetune import decoder_model, run_on_encoder, train_finetune

    xe, start, cache = half_trained
    root, _ = synthetic_data
    model, run, tuned = train_finetune(root, tmp_path / "ft", tiny_config, xe.vocab, start, FINETUNE,
                                       encoder_weights, cache, earlier=[xe.summary()], dtype="float32",
                                       progress=False)
    assert run.stage == "finetune" and run.monitor == "dev_cider" and run.epoch == 8
    assert run.best_epoch > 0 and run.best_score > run.earlier[-1]["dev"]["dev_cider"] + 0.1, run.history
    assert tuned.name == f"encoder-{run.best_epoch:03d}.float16.weights.h5"

    def layers_of(path):
        from captioner.encoder import build_encoder, load_encoder_weights

        encoder = build_encoder(tiny_config)
        load_encoder_weights(encoder, path)
        return {layer.name: layer.get_weights() for layer in encoder.layers if layer.weights}

    before, after = layers_of(run.encoder_weights), layers_of(tuned)
    for name in before:
        same = all(np.array_equal(a, b) for a, b in zip(before[name], after[name]))
        assert same == (not name.startswith("block5")), name
    with h5py.File(tuned) as f:  # stored as a model folder stores it
        assert all(d.dtype == np.float16 for d in _datasets(f))

    exported = run_on_encoder(run, tiny_config, tuned, cache, progress=False)
    assert exported.cache_dir != run.cache_dir and exported.encoder_weights != run.encoder_weights
    metrics = export_run(decoder_model(model, tiny_config, len(run.vocab)), exported, tmp_path / "model",
                         beam_sizes=(1,))
    assert metrics["stage"] == "finetune" and "block5 fine-tuned" in (tmp_path / "model" / "README.md").read_text()
    captioner = Captioner.load(tmp_path / "model", compute_dtype="float32")
    np.testing.assert_array_equal(captioner.encoder.get_layer("block5_conv3").get_weights()[0],
                                  after["block5_conv3"][0].astype(np.float32))
    # the folder's encoder and decoder together say what the stage's dev scores saw
    from captioner.decoding import greedy

    files = run.splits["dev"]
    seen = greedy(model.decoder, run.vocab, np.asarray(model.region_features(run.features("dev"))),
                  tiny_config.max_length, whole_endings=tiny_config.whole_endings)
    said = [captioner.describe(root / "Images" / f, beam_size=1).caption.words for f in files]
    assert said == [c.words for c in seen]


def _datasets(group):
    import h5py

    out = []
    group.visititems(lambda _, obj: out.append(obj) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_finetuning_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, half_trained, synthetic_data,
                                                                   encoder_weights, tiny_config):
    from captioner.training.finetune import train_finetune

    xe, start, cache = half_trained
    root, _ = synthetic_data
    config = dataclasses.replace(tiny_config, dropout=0.3)
    tcfg = dataclasses.replace(FINETUNE, finetune_block5=2)
    args = dict(encoder_weights=encoder_weights, cache_root=cache, dtype="float32", progress=False)
    train_finetune(root, tmp_path / "straight", config, xe.vocab, start, tcfg, **args)
    train_finetune(root, tmp_path / "stopped", config, xe.vocab, start, dataclasses.replace(tcfg, finetune_block5=1),
                   **args)
    _, run, _ = train_finetune(root, tmp_path / "stopped", config, xe.vocab, start, tcfg, resume=True, **args)
    assert run.epoch == 2
    import h5py

    with h5py.File(tmp_path / "straight" / "checkpoint-002" / "decoder.weights.h5") as a, \
            h5py.File(tmp_path / "stopped" / "checkpoint-002" / "decoder.weights.h5") as b:
        da, db = _datasets(a), _datasets(b)
        assert len(da) == len(db) > 20  # the decoder's and block5's
        for x, y in zip(da, db):
            np.testing.assert_array_equal(x[()], y[()], err_msg=x.name)


def test_finetuning_needs_vgg16_read_at_block5_conv3(tmp_path, half_trained, synthetic_data, encoder_weights,
                                                     tiny_config):
    from captioner.training.finetune import train_finetune

    xe, start, cache = half_trained
    with pytest.raises(ValueError, match="block5_conv3"):
        train_finetune(synthetic_data[0], tmp_path / "ft", dataclasses.replace(tiny_config, encoder_layer="block4_conv3"),
                       xe.vocab, start, FINETUNE, encoder_weights, cache)



def test_train_py_runs_cross_entropy_then_block5_then_scst_into_one_folder(tmp_path, synthetic_data,
                                                                            encoder_weights):
    """The three stages from the command line; the folder ships the encoder the last two stages read."""
    import json
    import sys
    from pathlib import Path

    from captioner.encoder import build_encoder, load_encoder_weights
    from captioner.pipeline import Captioner

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import train

    root, _ = synthetic_data
    run_dir = tmp_path / "run"
    argv = ["--data-dir", str(root), "--run-dir", str(run_dir), "--cache-dir", str(tmp_path / "cache"),
            "--encoder-weights", str(encoder_weights), "--out", str(tmp_path / "model"), "--dtype", "float32",
            "--embed-dim", "32", "--lstm-units", "64", "--attention-dim", "32",
            "--dropout", "0", "--max-length", "8", "--length-penalty", "0", "--min-word-count", "1",
            "--epochs", "4", "--batch-size", "16", "--learning-rate", "1e-2", "--alpha-c", "0",
            "--finetune-block5", "2", "--finetune-photos", "4", "--finetune-learning-rate", "1e-3",
            "--scst-epochs", "1", "--scst-photos", "4", "--scst-samples", "2", "--beam-sizes", "1", "--quiet"]
    train.main(argv)
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["stage"] == "scst"
    assert [s["stage"] for s in metrics["earlier_stages"]] == ["xe", "start", "finetune", "start"]
    tuned = metrics["earlier_stages"][2]
    assert (run_dir / "finetune" / f"decoder-{tuned['best_epoch']:03d}.weights.h5").is_file()
    expected = (run_dir / "finetune" / f"encoder-{tuned['best_epoch']:03d}.float16.weights.h5"
                if tuned["best_epoch"] else encoder_weights)
    reference = build_encoder(Captioner.load(tmp_path / "model", compute_dtype="float32").config)
    load_encoder_weights(reference, expected)
    shipped = Captioner.load(tmp_path / "model", compute_dtype="float32").encoder
    for layer in ("block1_conv1", "block5_conv3"):
        np.testing.assert_array_equal(shipped.get_layer(layer).get_weights()[0],
                                      reference.get_layer(layer).get_weights()[0].astype(np.float16).astype(np.float32))
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert ("block5 fine-tuned" in config["encoder_weights"]) == bool(tuned["best_epoch"])
    # --resume after everything finished: the same stages, nothing trained again
    train.main(argv + ["--resume"])
    again = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert again["earlier_stages"] == metrics["earlier_stages"] and again["history"] == metrics["history"]
    # SCST again from that folder: its own encoder by default, and every stage from the first on record
    train.main(["--data-dir", str(root), "--run-dir", str(tmp_path / "more"), "--cache-dir", str(tmp_path / "cache"),
                "--init-from", str(tmp_path / "model"), "--out", str(tmp_path / "more-model"), "--dtype", "float32",
                "--scst-epochs", "1", "--scst-photos", "4", "--scst-samples", "2", "--beam-sizes", "1", "--quiet"])
    more = json.loads((tmp_path / "more-model" / "metrics.json").read_text())
    assert [s["stage"] for s in more["earlier_stages"]] == ["xe", "start", "finetune", "start", "scst", "start"]
    assert more["earlier_stages"][2]["decoder"] == "trained"
    assert more["earlier_stages"][4]["history"] == metrics["history"]
    assert more["training_features_dtype"] == "float32"
    continued = Captioner.load(tmp_path / "more-model", compute_dtype="float32").encoder
    for a, b in zip(continued.get_weights(), shipped.get_weights()):
        np.testing.assert_array_equal(a, b)
    card = (tmp_path / "more-model" / "README.md").read_text()
    assert "then VGG16's block5 trained with the decoder" in card and "then SCST again" in card


def test_block5_alone_leaves_the_decoder_as_it_was(tmp_path, half_trained, synthetic_data, encoder_weights,
                                                   tiny_config):
    from captioner.model import build_model
    from captioner.training.checkpoints import load_decoder_weights
    from captioner.training.finetune import train_finetune

    xe, start, cache = half_trained
    tcfg = dataclasses.replace(FINETUNE, finetune_block5=1, finetune_decoder=False)
    model, run, _ = train_finetune(synthetic_data[0], tmp_path / "ft", tiny_config, xe.vocab, start, tcfg,
                                   encoder_weights, cache, dtype="float32", progress=False)
    before = build_model(tiny_config, len(xe.vocab))
    load_decoder_weights(before, start, file=True)
    for a, b in zip(before.decoder.get_weights(), model.decoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    trained = [v.path for v in model.trainable_variables]
    assert trained and all("block5" in p for p in trained), trained


def test_the_card_tells_an_scst_stage_that_changed_nothing_and_its_reward():
    """A stage whose best epoch is 0 kept its start's decoder, and the card says so; the reward is named."""
    from captioner.export import stage_story

    stages = [{"stage": "xe", "epochs": 9, "train_seconds": 4080},
              {"stage": "finetune", "epochs": 2, "train_seconds": 1680, "decoder": "frozen"},
              {"stage": "scst", "epochs": 10, "train_seconds": 4320, "best_epoch": 10, "reward_end": False},
              {"stage": "scst", "epochs": 5, "train_seconds": 2340, "best_epoch": 0, "reward_end": True}]
    story = stage_story(stages)
    assert story.startswith("Cross-entropy (9 epochs, 68 minutes), then VGG16's block5 trained alone under the frozen")
    assert "(SCST, Rennie et al. 2017; reward CIDEr-D, 10 epochs, 72 minutes)" in story
    assert story.endswith("SCST again from that stage's best epoch, with a new optimiser (reward CIDEr-D counting the "
                          "end of a caption as a word, 5 epochs, 39 minutes; no epoch beat its start on dev, so the "
                          "decoder is unchanged)")


def test_a_folder_written_before_stages_named_the_decoder_gets_it_from_its_train_config(tmp_path, tiny_model_dir):
    """The shipped folder's block5 stage has no ``decoder`` record; its train_config.json says
    ``finetune_decoder: false``, so a model made from it records the stage as "frozen"."""
    import json
    import shutil

    from captioner.training.scst import start_from_folder

    folder = tmp_path / "folder"
    shutil.copytree(tiny_model_dir, folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.update(stage="scst", earlier_stages=[{"stage": "xe"}, {"stage": "start"}, {"stage": "finetune"},
                                                 {"stage": "start"}])
    (folder / "metrics.json").write_text(json.dumps(metrics))
    train_config = json.loads((folder / "train_config.json").read_text())
    (folder / "train_config.json").write_text(json.dumps({**train_config, "finetune_block5": 2,
                                                          "finetune_decoder": False, "scst_reward_end": True}))
    stages = start_from_folder(folder)[3]
    assert [s["stage"] for s in stages] == ["xe", "start", "finetune", "start", "scst"]
    assert stages[2]["decoder"] == "frozen" and stages[4]["reward_end"] is True
    assert "decoder" not in json.loads((folder / "metrics.json").read_text())["earlier_stages"][2]  # read, not written
