import json

import numpy as np
import pytest

from captioner import features as feats
from captioner.features import FeatureCache, extract_features


def _paths(synthetic_data):
    root, truth = synthetic_data
    return [root / "Images" / f for f in sorted(truth)]


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_interrupted_extraction_resumes_to_the_same_array(tmp_path, synthetic_data, encoder_weights, tiny_config,
                                                          monkeypatch, dtype):
    paths = _paths(synthetic_data)
    whole = extract_features(paths, tmp_path / "whole", tiny_config, encoder_weights, batch_size=4,
                             dtype=dtype, progress=False)
    assert whole.array.shape == (12, 16, 512)  # 4 x 4 regions of a 64 x 64 photo
    assert whole.array.dtype == np.float16

    # Kill it after two batches: the progress file says 8, and reading it refuses until finished.
    real = feats._write_json_atomic

    def dying(path, data):
        real(path, data)
        if path.name == "progress.json" and data["done"] == 8:
            raise KeyboardInterrupt

    monkeypatch.setattr(feats, "_write_json_atomic", dying)
    with pytest.raises(KeyboardInterrupt):
        extract_features(paths, tmp_path / "part", tiny_config, encoder_weights, batch_size=4, dtype=dtype,
                         progress=False)
    monkeypatch.setattr(feats, "_write_json_atomic", real)
    assert json.loads((tmp_path / "part" / "progress.json").read_text())["done"] == 8
    with pytest.raises(RuntimeError, match="stopped at 8/12"):
        FeatureCache(tmp_path / "part")
    encoded = []  # photos per batch that the resumed run encodes: only the last 4 are left
    name = "int8_encode_function" if dtype == "int8" else "encode_function"
    real_encode = getattr(feats, name)

    def counting(*args):
        encode = real_encode(*args)
        return lambda pixels: (encoded.append(len(pixels)), encode(pixels))[1]

    monkeypatch.setattr(feats, name, counting)
    resumed = extract_features(paths, tmp_path / "part", tiny_config, encoder_weights, batch_size=4,
                               dtype=dtype, progress=False)  # int8: recalibrated on the same photos
    np.testing.assert_array_equal(np.asarray(resumed.array), np.asarray(whole.array))
    assert encoded == [4]


def test_unreadable_photo_is_skipped_not_fatal(tmp_path, synthetic_data, encoder_weights, tiny_config):
    paths = _paths(synthetic_data)[:3]
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a photo")
    cache = extract_features(paths + [bad], tmp_path / "c", tiny_config, encoder_weights, batch_size=2,
                             dtype="float32", progress=False)
    assert "bad.jpg" not in cache and paths[0].name in cache
    assert cache[paths[0].name].shape == (16, 512)


def test_changed_settings_start_a_fresh_extraction(tmp_path, synthetic_data, encoder_weights, tiny_config):
    paths = _paths(synthetic_data)[:2]
    a = extract_features(paths, tmp_path / "c", tiny_config, encoder_weights, batch_size=2, dtype="float32",
                         progress=False)
    first = np.asarray(a.array).copy()
    b = extract_features(paths[::-1], tmp_path / "c", tiny_config, encoder_weights, batch_size=2, dtype="float32",
                         progress=False)
    assert b.files == [p.name for p in paths[::-1]]
    assert not np.array_equal(np.asarray(b.array), first)  # rewritten in the new order ...
    # ... with the same features per photo (float32 convolutions may differ in the last bit
    # when a photo moves within its batch, so compare at float16's precision).
    np.testing.assert_allclose(np.asarray(b.array, np.float32)[::-1], first.astype(np.float32), rtol=2e-3, atol=1e-3)


def test_int8_features_follow_the_float32_ones(tmp_path, synthetic_data, encoder_weights, tiny_config):
    paths = _paths(synthetic_data)
    exact = extract_features(paths, tmp_path / "f32", tiny_config, encoder_weights, batch_size=4, dtype="float32",
                             progress=False)
    quantised = extract_features(paths, tmp_path / "int8", tiny_config, encoder_weights, batch_size=4, dtype="int8",
                                 progress=False)
    assert quantised.meta["compute_dtype"] == "int8"
    a = np.asarray(exact.array, np.float32).ravel()
    b = np.asarray(quantised.array, np.float32).ravel()
    assert not np.array_equal(a, b)  # really quantised
    assert np.corrcoef(a, b)[0, 1] > 0.99


def test_an_unknown_dtype_is_refused(tmp_path, synthetic_data, encoder_weights, tiny_config):
    with pytest.raises(ValueError, match="int8"):
        extract_features(_paths(synthetic_data)[:1], tmp_path / "c", tiny_config, encoder_weights, dtype="int4",
                         progress=False)
