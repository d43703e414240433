"""Decoder training speed: seconds per step at the shipped size, and the implied epoch time.

    python benchmarks/train_epoch.py [--steps 40] [--batch-size 64] [--xla both|off|on]

Trains on random features and captions with the real caption-length mix of
Flickr8k (bucketed as in training) with Keras ``fit``, as train.py does, and
prints the time for 30,000 captions with plain TensorFlow graphs (train.py's
default) and with the train step compiled by XLA (``--jit-compile``).
The real figure is in a training run's log: ``train_seconds`` per epoch.
"""
from __future__ import annotations

import argparse
import time

import keras
import numpy as np
from common import ModelConfig

from captioner import backend
from captioner.encoder import feature_shape
from captioner.model import build_model
from captioner.pipeline import DEFAULT_MODEL
from captioner.training import CaptionBatches
from captioner.vocab import Vocabulary

# Word counts of the 30,000 Flickr8k training captions (after tokenize), as fractions in 3-word bins
# (measured once with captioner.flickr8k.load_data on ../shared/flickr8k; longer captions count as 22).
LENGTH_MIX = {5: 0.109, 8: 0.291, 11: 0.307, 14: 0.184, 17: 0.073, 20: 0.024, 22: 0.012}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--xla", choices=["both", "off", "on"], default="both")
    args = p.parse_args()
    config = ModelConfig()
    vocab_size = len(Vocabulary.load(DEFAULT_MODEL / "vocab.json"))  # the shipped model's 2,539 words
    grid, _, width = feature_shape(config)  # 14 x 14 regions of 512 features
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size * 2
    lengths = rng.choice(list(LENGTH_MIX), size=n, p=np.array(list(LENGTH_MIX.values())) / sum(LENGTH_MIX.values()))
    caps = [[1] + list(rng.integers(4, vocab_size, k)) + [2] for k in lengths]
    feats = rng.random((500, grid * grid, width)).astype(np.float16)
    results = {}
    for jit in {"both": (False, True), "off": (False,), "on": (True,)}[args.xla]:
        batches = CaptionBatches(feats, rng.integers(0, 500, n), caps, args.batch_size, config.max_length)
        model = build_model(config, vocab_size)
        model.compile(optimizer=keras.optimizers.Adam(4e-4), jit_compile=backend.jit_compile(jit))
        model.fit(batches.dataset().repeat(), epochs=1, steps_per_epoch=30, verbose=0)  # compile every bucket shape
        start = time.perf_counter()
        model.fit(batches.dataset().repeat(), epochs=1, steps_per_epoch=args.steps, verbose=0)
        results[jit] = (time.perf_counter() - start) / args.steps
    for jit, per_step in results.items():
        epoch = per_step * 30_000 / args.batch_size
        print(f"{'XLA' if jit else 'plain graphs'}: {1000 * per_step:.0f} ms/step, "
              f"30,000 captions = {epoch / 60:.1f} min/epoch")
    print("goal: at most 5 min/epoch")


if __name__ == "__main__":
    main()
