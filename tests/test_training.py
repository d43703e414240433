import dataclasses
import json

import numpy as np
import pytest

from captioner.config import TrainConfig
from captioner.training import CaptionBatches, latest_checkpoint, train


def test_batches_pad_to_buckets_and_depend_only_on_seed_and_epoch():
    rng = np.random.default_rng(0)
    caps = [[1] + list(rng.integers(4, 9, n)) + [2] for n in rng.integers(1, 14, 200)]
    rows = np.arange(200) % 7
    features = rng.random((7, 4, 3)).astype(np.float16)
    a = CaptionBatches(features, rows, caps, 16, max_length=12, seed=1)
    b = CaptionBatches(features, rows, caps, 16, max_length=12, seed=1, epoch=0)
    assert a.dropped == sum(len(c) - 2 > 12 for c in caps)
    for i in range(len(a)):
        fa, ca = a[i]["features"], a[i]["captions"]
        cb = b[i]["captions"]
        np.testing.assert_array_equal(ca, cb)
        assert ca.shape[1] in (12, 15, 14)  # bucket + <start> + <end>
        assert (ca[:, 0] == 1).all() and fa.shape == (16, 4, 3)
    first = [a[i]["captions"].tolist() for i in range(len(a))]
    a.on_epoch_end()
    assert [a[i]["captions"].tolist() for i in range(len(a))] != first


def test_resume_continues_after_a_finished_epoch(tmp_path, synthetic_data, encoder_weights, tiny_config):
    root, _ = synthetic_data
    tcfg = TrainConfig(epochs=2, batch_size=16, learning_rate=1e-2, alpha_c=0.0, min_word_count=1, patience=5)
    run = tmp_path / "run"
    train(root, run, tiny_config, dataclasses.replace(tcfg, epochs=1), encoder_weights, tmp_path / "cache",
          dtype="float32", progress=False)
    first = latest_checkpoint(run)
    assert first.name == "checkpoint-001"
    iterations = int(np.load(first / "optimizer.npz")["arr_0"])
    assert iterations > 0
    model, vocab, config, state, *_ = train(root, run, tiny_config, dataclasses.replace(tcfg, average_last=2),
                                            encoder_weights, tmp_path / "cache", resume=True, dtype="float32",
                                            progress=False)
    assert state["averaged"]["epochs"] == [1, 2] and 0 <= state["averaged"]["dev_bleu4_greedy"] <= 1
    assert state["epoch"] == 2 and [h["epoch"] for h in state["history"]] == [1, 2]
    assert int(np.load(latest_checkpoint(run) / "optimizer.npz")["arr_0"]) == 2 * iterations
    import h5py

    with h5py.File(latest_checkpoint(run) / "decoder.weights.h5") as f:  # weights only; Adam is in the npz
        assert "optimizer" not in f and "decoder" in f
    assert (run / "history.png").stat().st_size > 1000
    assert len((run / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    assert json.loads((run / "vocab.json").read_text())["words"] == vocab.words

    # A run whose architecture differs refuses to resume.
    with pytest.raises(ValueError, match="different architecture"):
        train(root, run, dataclasses.replace(tiny_config, lstm_units=32), tcfg, encoder_weights, tmp_path / "cache",
              resume=True, dtype="float32", progress=False)
