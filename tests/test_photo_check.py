"""The "is this a photo?" check: generated pictures, the classifier, its file, and its place in a model folder."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from captioner.nonphotos import GENERATORS, SIZE, generate
from captioner.photo_check import FILE, MESSAGES, PHOTO, PhotoCheck, choose_threshold, fit, summarise
from captioner.pipeline import Captioner, ModelFolderError


def test_generated_pictures_are_reproducible_and_differ():
    for kind in GENERATORS:
        first, again, other = generate(kind, 2, seed=7), generate(kind, 2, seed=7), generate(kind, 2, seed=8)
        assert all(im.mode == "RGB" and im.size == (SIZE, SIZE) for im in first)
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again)), kind
        assert not np.array_equal(np.asarray(first[0]), np.asarray(other[0])), kind
        assert not np.array_equal(np.asarray(first[0]), np.asarray(first[1])), kind


def test_a_generated_page_is_mostly_paper_and_blank_is_nearly_flat():
    page = np.asarray(generate("text", 1, seed=0)[0], np.float32).mean(axis=2)
    assert np.mean(page > 150) > 0.6  # paper, with ink on it
    assert np.mean(page < 100) > 0.01
    flat = np.asarray(generate("blank", 1, seed=0)[0], np.float32)
    assert flat.std(axis=(0, 1)).max() < 40


def _features(kind_index: int, n: int, rng) -> np.ndarray:
    """(n, L=6, D=4) region vectors whose statistics depend on the kind (a stand-in for the encoder's)."""
    scale = 1.0 + kind_index
    spread = 0.2 + 0.5 * (kind_index % 2)
    return np.abs(rng.normal(scale, spread, (n, 6, 4))).astype(np.float32)


def test_fit_learns_the_kinds_and_the_file_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    kinds = [PHOTO, "text", "blank"]
    check = fit({k: summarise(_features(i, 60, rng)) for i, k in enumerate(kinds)}, steps=300)
    assert check.kinds == tuple(kinds)
    for i, kind in enumerate(kinds):
        said = [v.kind for v in check.judge(_features(i, 40, rng), threshold=0.5)]
        assert np.mean([s == kind for s in said]) >= 0.9, (kind, said)
    check.save(tmp_path / FILE)
    again = PhotoCheck.load(tmp_path / FILE)
    probe = _features(1, 5, rng)
    np.testing.assert_allclose(again.probabilities(probe), check.probabilities(probe), atol=1e-4)
    assert again.record["trained_on"] == {PHOTO: 60, "text": 60, "blank": 60}


def test_verdicts_and_their_words():
    check = fit({PHOTO: summarise(_features(0, 30, np.random.default_rng(1))),
                 "screen": summarise(_features(3, 30, np.random.default_rng(2)))}, steps=200)
    photo, screen = check.judge(np.concatenate([_features(0, 1, np.random.default_rng(3)),
                                                _features(3, 1, np.random.default_rng(4))]), threshold=0.5)
    assert photo.is_photo and photo.message is None and photo.p_photo > 0.5
    assert screen.kind == "screen" and screen.message == MESSAGES["screen"] and screen.p_photo < 0.5
    # threshold 0: nothing is ever turned away
    assert all(v.is_photo for v in check.judge(_features(3, 5, np.random.default_rng(5)), threshold=0.0))


def test_threshold_turns_away_the_chosen_share_of_dev_photos():
    p = np.linspace(0.0, 1.0, 1001)  # dev photos' p(photo)
    threshold = choose_threshold(p, false_alarms=0.01)
    assert np.mean(p < threshold) == pytest.approx(0.01, abs=0.002)
    assert choose_threshold(np.full(100, 0.99), 0.01) == 0.5  # never above the ceiling


@pytest.mark.parametrize("damage", ["not json", "kinds", "shapes"])
def test_a_damaged_photo_check_is_refused_naming_the_file(tiny_model_dir, tmp_path, damage):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    rng = np.random.default_rng(0)
    check = fit({PHOTO: summarise(_features(0, 20, rng)), "text": summarise(_features(1, 20, rng))}, steps=10)
    check.save(folder / FILE)  # width 8 (D = 4): not the tiny encoder's 2 x 512
    data = json.loads((folder / FILE).read_text())
    if damage == "not json":
        (folder / FILE).write_text("{ this is not")
    elif damage == "kinds":
        data["kinds"] = ["photo", "cartoon"]
        (folder / FILE).write_text(json.dumps(data))
    with pytest.raises(ModelFolderError, match=FILE):
        Captioner.load(folder, compute_dtype="float32")


@pytest.mark.slow
def test_fit_photo_check_on_a_model_folder(trained_run, tiny_model_dir, synthetic_data, tmp_path):
    """The whole command on the tiny model: it writes the check and the threshold, and the folder uses them;
    by default it reads the folder's own encoder, and so finds the features train.py cached."""
    from captioner.training.photo_check import fit_photo_check, format_measured

    root, _ = synthetic_data
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    cached = sorted((trained_run / "cache").glob("features-*"))
    measured = fit_photo_check(folder, root, None, trained_run / "cache", per_kind=6, held_out=3,
                               false_alarms=0.0, dtype="float32")
    assert sorted((trained_run / "cache").glob("features-*")) == cached  # nothing extracted again
    assert set(measured["held_out_detected"]) == set(GENERATORS)
    assert measured["dev_false_alarms"] == 0.0  # false_alarms=0: the threshold lies at or below every dev photo
    assert "threshold" in format_measured(measured)
    captioner = Captioner.load(folder, compute_dtype="float32")
    assert captioner.photo_check is not None
    assert captioner.config.photo_threshold == pytest.approx(measured["threshold"], abs=1e-6)
    # the coloured shapes it was trained on are photos to it
    photo = Image.open(next((root / "Images").glob("1000_*.jpg")))
    assert captioner.describe(photo).is_photo


def test_fit_photo_check_refuses_another_encoder_before_extracting_anything(tiny_model_dir, synthetic_data,
                                                                           tmp_path):
    """Features cached under another encoder would not be what the folder computes: refused at once."""
    from captioner.training.photo_check import fit_photo_check
    from synthetic import random_encoder_weights

    root, _ = synthetic_data
    other = random_encoder_weights(tmp_path / "other.weights.h5", seed=1)
    with pytest.raises(ValueError, match="is not the encoder of"):
        fit_photo_check(tiny_model_dir, root, other, tmp_path / "cache", per_kind=2, held_out=1, dtype="float32")
    assert not list((tmp_path / "cache").glob("features-*"))  # nothing was extracted
    assert not (tiny_model_dir / FILE).exists()
