"""Shared fixtures: a synthetic data set, random encoder weights and a tiny trained model folder.

Nothing here needs ../shared, the network or a GPU.
"""
from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Hermetic: what the package keeps between runs (the measured encoder arithmetic) goes to a
# folder of this test session, not to the user's ~/.cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="captioner-test-cache-")

from synthetic import TINY, make_dataset, random_encoder_weights  # noqa: E402

from captioner.config import TrainConfig  # noqa: E402


@pytest.fixture(scope="session")
def tiny_config():
    return TINY


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("flickr_synthetic")
    truth = make_dataset(root)
    return root, truth


@pytest.fixture(scope="session")
def encoder_weights(tmp_path_factory):
    return random_encoder_weights(tmp_path_factory.mktemp("weights") / "tiny_vgg16.weights.h5")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, synthetic_data, encoder_weights):
    """Train the tiny model on the coloured shapes until it has learnt them, and export it."""
    from captioner.export import export_run
    from captioner.training import train

    root, _ = synthetic_data
    work = tmp_path_factory.mktemp("run")
    tcfg = TrainConfig(epochs=60, batch_size=16, learning_rate=1e-2, lr_decay=0.97, alpha_c=0.0,
                       min_word_count=1, patience=60, seed=0)
    model, run = train(root, work / "run", TINY, tcfg, encoder_weights, work / "cache", dtype="float32",
                       progress=False)
    export_run(model, run, work / "model", beam_sizes=(1, 3))
    return work


@pytest.fixture(scope="session")
def tiny_model_dir(trained_run):
    """A model folder (config.json, vocab.json, weights, metrics, card) that knows the coloured shapes."""
    return trained_run / "model"


@pytest.fixture(scope="session")
def tiny_captioner(tiny_model_dir):
    from captioner.pipeline import Captioner

    return Captioner.load(tiny_model_dir, compute_dtype="float32")
