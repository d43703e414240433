import dataclasses
import errno
import json
import shutil
import warnings

import numpy as np
import pytest

from captioner.config import TrainConfig
from captioner.training import CaptionBatches, Run, latest_checkpoint, train
from captioner.training import checkpoints


def smallest_bucket(words: int, max_length: int) -> int:
    """Written out here rather than taken from the code under test: BUCKETS is (10, 13, 16)."""
    return next(b for b in (10, 13, 16, max_length) if words <= b and b <= max_length)


@pytest.mark.parametrize("max_length, widths", [(12, {10, 12}), (22, {10, 13, 16, 22})])
def test_each_caption_is_padded_only_to_the_smallest_bucket_it_fits(max_length, widths):
    rng = np.random.default_rng(0)
    caps = [[1] + list(rng.integers(4, 9, n)) + [2] for n in rng.integers(1, max_length + 4, 400)]
    rows = np.arange(400) % 7
    features = rng.random((7, 4, 3)).astype(np.float16)
    batches = CaptionBatches(features, rows, caps, 8, max_length=max_length, seed=1)
    assert batches.dropped == sum(len(c) - 2 > max_length for c in caps)
    seen = set()
    for i, (bucket, members) in enumerate(batches.batches):
        batch = batches[i]
        padded = batch["captions"]
        assert padded.shape == (8, bucket + 2)  # <start> w_1 .. w_bucket <end>
        for row, member in zip(padded, members):
            words = len(caps[member]) - 2
            assert bucket == smallest_bucket(words, max_length), (words, bucket)
            assert row[: len(caps[member])].tolist() == caps[member] and not row[len(caps[member]):].any()
        np.testing.assert_array_equal(batch["features"], features[rows[members]])
        seen.add(bucket)
    assert seen == widths  # every width occurs, and no other


def test_batches_depend_only_on_seed_and_epoch():
    rng = np.random.default_rng(0)
    caps = [[1] + list(rng.integers(4, 9, n)) + [2] for n in rng.integers(1, 14, 200)]
    rows = np.arange(200) % 7
    features = rng.random((7, 4, 3)).astype(np.float16)
    as_lists = lambda b: [b[i]["captions"].tolist() for i in range(len(b))]  # noqa: E731
    a = CaptionBatches(features, rows, caps, 16, max_length=12, seed=1)
    first = as_lists(a)
    assert as_lists(CaptionBatches(features, rows, caps, 16, max_length=12, seed=1)) == first
    assert as_lists(CaptionBatches(features, rows, caps, 16, max_length=12, seed=2)) != first
    a.on_epoch_end()
    second = as_lists(a)
    assert second != first
    resumed = CaptionBatches(features, rows, caps, 16, max_length=12, seed=1)
    resumed.start_at(1)
    assert as_lists(resumed) == second


def decoder_weights(checkpoint):
    import h5py

    out = {}
    with h5py.File(checkpoint / "decoder.weights.h5") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, synthetic_data, encoder_weights, tiny_config,
                                                         monkeypatch):
    """2 epochs straight == 1 epoch, stop, resume for 1: bit for bit, not to a tolerance (the CPU kernels of
    TensorFlow and of JAX both give identical results here for identical inputs; checked under both backends).

    With dropout and the attention penalty on, so Adam's moments, its step
    counter (which drives the learning-rate decay) and the dropout seeds all
    have to come back for the weights to match.
    """
    root, _ = synthetic_data
    config = dataclasses.replace(tiny_config, dropout=0.3)
    tcfg = TrainConfig(epochs=2, batch_size=16, learning_rate=1e-2, lr_decay=0.5, alpha_c=1.0, min_word_count=1,
                       patience=5, seed=3)
    cache = tmp_path / "cache"
    args = dict(encoder_weights=encoder_weights, cache_root=cache, dtype="float32", progress=False)
    train(root, tmp_path / "straight", config, tcfg, **args)
    train(root, tmp_path / "stopped", config, dataclasses.replace(tcfg, epochs=1), **args)
    shutil.copytree(tmp_path / "stopped", tmp_path / "control")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, run = train(root, tmp_path / "stopped", config, tcfg, resume=True, **args)
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]  # Keras's sign of a fresh Adam
    assert run.epoch == 2
    straight = decoder_weights(tmp_path / "straight" / "checkpoint-002")
    resumed = decoder_weights(tmp_path / "stopped" / "checkpoint-002")
    assert straight.keys() == resumed.keys()
    for name in straight:
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)
    for name in ("optimizer.npz", "seeds.npz"):
        with np.load(tmp_path / "straight" / "checkpoint-002" / name) as a, \
                np.load(tmp_path / "stopped" / "checkpoint-002" / name) as b:
            assert a.files == b.files
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])

    # The test can fail: resuming with a fresh Adam (what happened before) gives other weights.
    monkeypatch.setattr(checkpoints, "_assign_all", lambda variables, path, what: None)
    train(root, tmp_path / "control", config, tcfg, resume=True, **args)
    control = decoder_weights(tmp_path / "control" / "checkpoint-002")
    assert any(not np.array_equal(control[name], straight[name]) for name in straight)


def test_resume_continues_after_a_finished_epoch(tmp_path, synthetic_data, encoder_weights, tiny_config):
    root, _ = synthetic_data
    tcfg = TrainConfig(epochs=2, batch_size=16, learning_rate=1e-2, alpha_c=0.0, min_word_count=1, patience=5)
    run_dir = tmp_path / "run"
    train(root, run_dir, tiny_config, dataclasses.replace(tcfg, epochs=1), encoder_weights, tmp_path / "cache",
          dtype="float32", progress=False)
    first = latest_checkpoint(run_dir)
    assert first.name == "checkpoint-001"
    iterations = int(np.load(first / "optimizer.npz")["arr_0"])
    assert iterations > 0
    model, run = train(root, run_dir, tiny_config, dataclasses.replace(tcfg, average_last=2), encoder_weights,
                       tmp_path / "cache", resume=True, dtype="float32", progress=False)
    assert isinstance(run, Run) and run.epoch == 2 and [h["epoch"] for h in run.history] == [1, 2]
    assert run.averaged.epochs == [1, 2] and 0 <= run.averaged.dev_bleu4_greedy <= 1
    assert run.best_epoch in (1, 2) and run.best_score == run.history[run.best_epoch - 1]["dev_bleu4"]
    assert run.train_config.average_last == 2 and run.config == tiny_config
    assert int(np.load(latest_checkpoint(run_dir) / "optimizer.npz")["arr_0"]) == 2 * iterations
    import h5py

    with h5py.File(latest_checkpoint(run_dir) / "decoder.weights.h5") as f:  # weights only; Adam is in the npz
        assert "optimizer" not in f and "decoder" in f
    assert (run_dir / "history.png").stat().st_size > 1000
    assert len((run_dir / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    assert json.loads((run_dir / "vocab.json").read_text())["words"] == run.vocab.words

    # The record in state.json is the run: it reads back equal (the average is decided after the last save).
    saved = Run.load(latest_checkpoint(run_dir) / "state.json")
    assert saved.averaged is None and dataclasses.replace(saved, averaged=run.averaged).to_dict() == run.to_dict()
    assert saved.vocab.words == run.vocab.words and saved.config == run.config
    assert saved.features("test").shape == (len(run.splits["test"]), 16, 512)

    # A run whose architecture differs refuses to resume.
    with pytest.raises(ValueError, match="different architecture"):
        train(root, run_dir, dataclasses.replace(tiny_config, lstm_units=32), tcfg, encoder_weights,
              tmp_path / "cache", resume=True, dtype="float32", progress=False)


def test_a_failed_checkpoint_write_loses_no_finished_epoch(tmp_path, synthetic_data, encoder_weights, tiny_config,
                                                          monkeypatch):
    """The disk fills while epoch 2 is saved: a clear error, epoch 1 stays in force, and resuming redoes epoch 2."""
    root, _ = synthetic_data
    tcfg = TrainConfig(epochs=2, batch_size=16, learning_rate=1e-2, alpha_c=0.0, min_word_count=1, patience=5)
    run_dir = tmp_path / "run"
    real_savez = np.savez

    def savez(path, *arrays):
        if "checkpoint-002" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_savez(path, *arrays)

    monkeypatch.setattr(checkpoints.np, "savez", savez)
    with pytest.raises(OSError, match=r"could not write .*checkpoint-002.*checkpoint-001 is still in force"):
        train(root, run_dir, tiny_config, tcfg, encoder_weights, tmp_path / "cache", dtype="float32",
              progress=False)
    monkeypatch.setattr(checkpoints.np, "savez", real_savez)
    assert latest_checkpoint(run_dir).name == "checkpoint-001"
    assert sorted(p.name for p in run_dir.glob("*checkpoint-*")) == ["checkpoint-001"]  # no half-written folder
    _, run = train(root, run_dir, tiny_config, tcfg, encoder_weights, tmp_path / "cache", resume=True,
                   dtype="float32", progress=False)
    assert [h["epoch"] for h in run.history] == [1, 2] and latest_checkpoint(run_dir).name == "checkpoint-002"


def test_export_scores_from_the_run_and_evaluate_reproduces_it(trained_run, tmp_path, synthetic_data):
    from captioner.config import ModelConfig
    from captioner.evaluate import evaluate_folder

    folder = trained_run / "model"
    metrics = json.loads((folder / "metrics.json").read_text())
    # Scored from the run's own feature cache: export extracted nothing more.
    assert len(list((trained_run / "cache").glob("features-*"))) == 1
    config = ModelConfig.load(folder / "config.json")
    assert config.hedge_sure == round(metrics["dev_hedging"]["hedge_sure"], 4)
    assert config.hedge_possible == round(metrics["dev_hedging"]["hedge_possible"], 4)
    assert metrics["training_features_dtype"] == "float32" and metrics["epochs_run"] == len(metrics["history"])
    # The folder's own encoder, extracting the test split afresh, gives the very same table.
    root, _ = synthetic_data
    table = evaluate_folder(folder, root, "test", (1, 3), tmp_path / "cache", progress=False)
    assert {str(k): v for k, v in table.items()} == metrics["test"]


TRAIN_IN_A_CHILD = """
import json, sys
from captioner.config import ModelConfig, TrainConfig
from captioner.training import train
config, tcfg = ModelConfig.from_dict(json.loads(sys.argv[1])), TrainConfig(**json.loads(sys.argv[2]))
train(sys.argv[3], sys.argv[4], config, tcfg, sys.argv[5], sys.argv[6], dtype="float32", progress=False)
"""


@pytest.mark.slow
def test_kill_9_loses_no_finished_epoch(tmp_path, synthetic_data, encoder_weights, tiny_config):
    """kill -9 a training process once a checkpoint exists; --resume starts after the last finished epoch."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root, _ = synthetic_data
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    tcfg = TrainConfig(epochs=30, batch_size=16, learning_rate=1e-2, alpha_c=0.0, min_word_count=1, patience=30)
    child = subprocess.Popen(
        [sys.executable, "-c", TRAIN_IN_A_CHILD, tiny_config.to_json(), tcfg.to_json(), str(root), str(run_dir),
         str(encoder_weights), str(cache)],
        env={**os.environ, "KERAS_BACKEND": "tensorflow"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while latest_checkpoint(run_dir) is None:
            assert child.poll() is None, "training stopped before its first checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)  # somewhere in the next epoch, or in the middle of writing its checkpoint
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    done = Run.load(latest_checkpoint(run_dir) / "state.json").epoch
    assert 1 <= done < tcfg.epochs
    _, run = train(root, run_dir, tiny_config, dataclasses.replace(tcfg, epochs=done + 1), encoder_weights, cache,
                   resume=True, dtype="float32", progress=False)
    assert [h["epoch"] for h in run.history] == list(range(1, done + 2))
    assert latest_checkpoint(run_dir).name == f"checkpoint-{done + 1:03d}"


def test_a_later_stage_keeps_its_starts_score_when_no_epoch_beat_it(tmp_path, synthetic_data, encoder_weights,
                                                                     tiny_config):
    """An SCST or block5 stage scores its start as "epoch 0"; if no epoch beats it, the record written to
    state.json must still hold that score, or a resumed stage would take any epoch, however worse."""
    root, _ = synthetic_data
    tcfg = TrainConfig(epochs=1, batch_size=16, learning_rate=1e-2, alpha_c=0.0, min_word_count=1)
    _, run = train(root, tmp_path / "run", tiny_config, tcfg, encoder_weights, tmp_path / "cache", dtype="float32",
                   progress=False)
    later = dataclasses.replace(run, stage="scst", best_epoch=0, best_score=0.4321)
    assert Run.from_dict(json.loads(later.to_json())).best_score == 0.4321
    fresh = dataclasses.replace(run, best_epoch=0, best_score=float("-inf"))  # nothing scored yet
    assert json.loads(fresh.to_json())["best_score"] is None
    assert Run.from_dict(json.loads(fresh.to_json())).best_score == float("-inf")
