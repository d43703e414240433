"""Helpers shared by the benchmarks: photos to time on, and an encoder with real or random weights."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from captioner.config import ModelConfig

REAL_WEIGHTS = Path("weights/vgg16_block5_conv3.weights.h5")


def photos(data_dir: Path | None, count: int, config: ModelConfig) -> np.ndarray:
    """Preprocessed photos (count, S, S, 3): Flickr8k photos if given, else seeded random ones."""
    from captioner.image import load_and_preprocess

    if data_dir:
        files = sorted((Path(data_dir) / "Images").glob("*.jpg"))[:count]
        return np.stack([load_and_preprocess(f, config) for f in files])
    rng = np.random.default_rng(0)
    return rng.normal(size=(count, config.image_size, config.image_size, 3)).astype(np.float32)


def encoder(config: ModelConfig, dtype: str):
    """VGG16 to block5_conv3 with the real weights when built, else random ones (speed is the same)."""
    from captioner.encoder import build_encoder, load_encoder_weights

    model = build_encoder(config, dtype=dtype)
    if REAL_WEIGHTS.is_file():
        load_encoder_weights(model, REAL_WEIGHTS)
    return model


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out
