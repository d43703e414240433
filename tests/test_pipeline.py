import json
import shutil

import numpy as np
import pytest

from captioner.config import ModelConfig
from captioner.pipeline import Captioner, ModelFolderError, check_folder


def test_model_folder_holds_everything_and_no_pickle(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "vocab.json", "encoder.weights.json", "decoder.weights.json", "metrics.json",
            "README.md", "train_config.json"} <= names
    shards = [p for p in tiny_model_dir.iterdir() if p.name.endswith(".weights.h5")]
    assert {p.name.split("_")[0] for p in shards} == {"encoder", "decoder"}
    assert all(p.stat().st_size < 10 * 10**6 for p in tiny_model_dir.iterdir())
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".keras"))]
    metrics = json.loads((tiny_model_dir / "metrics.json").read_text())
    assert set(metrics["test"]) == {"1", "3"} and metrics["test"]["3"]["bleu4"] > 0.9
    config = ModelConfig.load(tiny_model_dir / "config.json")
    assert config.hedge_possible <= config.hedge_sure  # calibrated on dev
    assert "Test scores" in (tiny_model_dir / "README.md").read_text()


def test_config_round_trip(tmp_path):
    config = ModelConfig(image_size=96, pixel_mean=(0.1, 0.2, 0.3))
    config.save(tmp_path / "c.json")
    assert ModelConfig.load(tmp_path / "c.json") == config
    # Derived values are not stored: the vocabulary size comes from vocab.json, the width from the encoder.
    assert "vocab_size" not in config.to_json() and "feature_dim" not in config.to_json()
    # Folders written before that still load: their copies are ignored.
    assert ModelConfig.from_dict({**json.loads(config.to_json()), "vocab_size": 42, "feature_dim": 512}) == config
    with pytest.raises(ValueError, match="unknown keys"):
        ModelConfig.from_dict({"image_size": 224, "colour": "red"})


def test_save_load_caption_again_is_identical(tmp_path, synthetic_data, tiny_captioner, tiny_model_dir):
    root, truth = synthetic_data
    shutil.copytree(tiny_model_dir, tmp_path / "copy")
    again = Captioner.load(tmp_path / "copy", compute_dtype="float32")
    for name in list(truth)[:3]:
        a = tiny_captioner.describe(root / "Images" / name).caption
        b = again.describe(root / "Images" / name).caption
        assert a.words == b.words and a.log_prob == b.log_prob
        np.testing.assert_array_equal(a.attention, b.attention)


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "vocab.json").unlink(), "missing vocab.json"),
    (lambda d: (d / "vocab.json").write_text(json.dumps({"words": ["<pad>", "<start>", "<end>", "<unk>", "x"]})),
     r"decoder.weights.json: the weights do not fit .* \(5 words\)"),
    (lambda d: (d / "vocab.json").write_text("{"), "vocab.json"),
    (lambda d: next(d.glob("decoder_*.weights.h5")).write_text("version https://git-lfs.github.com/spec/v1\n"),
     r"decoder_\d+.weights.h5 is a Git LFS pointer"),
    (lambda d: (d / "encoder.weights.json").write_text("version https://git-lfs.github.com/spec/v1\n"),
     "encoder.weights.json is a Git LFS pointer"),
    (lambda d: next(d.glob("encoder_*.weights.h5")).unlink(), r"encoder.weights.json lists encoder_\d+.weights.h5, which is missing"),
    (lambda d: (d / "config.json").write_text(json.dumps({"image_size": 224, "bogus": 1})), "unknown keys"),
])
def test_inconsistent_folders_fail_clearly(tmp_path, tiny_model_dir, breakage, message):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    breakage(folder)
    with pytest.raises(ModelFolderError, match=message):
        Captioner.load(folder)


def test_weights_that_do_not_fit_the_config(tmp_path, tiny_model_dir):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["lstm_units"] = 16
    (folder / "config.json").write_text(json.dumps(config))
    check_folder(folder)  # the files are all there and readable ...
    with pytest.raises(ModelFolderError, match="decoder.weights.json: the weights do not fit"):  # ... but do not fit
        Captioner.load(folder)


def test_missing_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        Captioner.load(tmp_path / "nope")


def test_a_full_disk_while_a_model_folder_is_written_leaves_the_old_one_loading(tiny_model_dir, tmp_path,
                                                                                monkeypatch):
    import errno

    import captioner.model as model_module
    from captioner.pipeline import save_folder

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "NOTES.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    loaded = Captioner.load(folder, compute_dtype="float32")
    written = []

    def full_disk(model, path, **kwargs):
        written.append(path)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model_module, "save_model_weights", full_disk)
    with pytest.raises(ModelFolderError, match=r"could not write the model folder .*No space left.*untouched"):
        save_folder(folder, loaded.config, loaded.vocab, loaded.encoder, loaded.model)
    assert written  # the failure came where the decoder's weights were written, after the encoder's
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # nothing half-written left beside it
    Captioner.load(folder, compute_dtype="float32")
    monkeypatch.undo()
    save_folder(folder, loaded.config, loaded.vocab, loaded.encoder, loaded.model, metrics={"test": {}})
    assert (folder / "NOTES.txt").read_text() == "mine" and json.loads((folder / "metrics.json").read_text()) == \
        {"test": {}}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert Captioner.load(folder, compute_dtype="float32").describe(np.full((32, 32, 3), 200, np.uint8)).words


def test_a_shared_encoder_is_stored_once_and_checked_by_its_sha256(tiny_model_dir, tmp_path):
    from captioner.pipeline import ENCODER_REFERENCE, ENCODER_WEIGHTS, encoder_path, share_encoder

    one, two, shared = tmp_path / "one", tmp_path / "two", tmp_path / "shared"
    shutil.copytree(tiny_model_dir, one)
    shutil.copytree(tiny_model_dir, two)
    before = Captioner.load(one, compute_dtype="float32").describe(np.full((32, 32, 3), 90, np.uint8)).words
    target = share_encoder(one, shared)
    share_encoder(two, shared)  # the same weights: the second copy goes too
    for folder in (one, two):
        assert not (folder / ENCODER_WEIGHTS).exists() and (folder / ENCODER_REFERENCE).is_file()
        assert encoder_path(folder) == target.resolve()
        assert Captioner.load(folder, compute_dtype="float32").describe(
            np.full((32, 32, 3), 90, np.uint8)).words == before
    shard = sorted(shared.glob("encoder_*.weights.h5"))[0]
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF  # one byte of the shared weights changed
    shard.write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match=r"encoder\.weights\.json \(named by .*encoder\.json\) has sha256"):
        Captioner.load(one, compute_dtype="float32")
