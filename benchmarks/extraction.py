"""Feature extraction speed: this project's path against plain float32 ``model.predict``.

    python benchmarks/extraction.py [--data-dir ../shared/flickr8k] [--photos 128]

Both run VGG16 up to block5_conv3 on the same photos in the same process.
The project's path (captioner.features) calls the model directly in a
tf.function, in bfloat16 where the CPU supports it, with batches of 32.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import encoder, photos, timed

from captioner.config import ModelConfig
from captioner.encoder import encode_function
from captioner.features import best_compute_dtype


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--photos", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    config = ModelConfig()
    x = photos(args.data_dir, args.photos, config)
    n = len(x)

    baseline = encoder(config, "float32")
    baseline.predict(x[:16], batch_size=16, verbose=0)  # warm up
    t_base = min(timed(lambda: baseline.predict(x, batch_size=16, verbose=0), 2))

    dtype = best_compute_dtype()
    fast = encoder(config, dtype)
    fn = encode_function(fast, dtype)  # what captioner.features uses

    def ours():
        for s in range(0, n, args.batch_size):
            fn(x[s:s + args.batch_size]).numpy().astype(np.float16)

    ours()  # warm up (traces once per batch shape)
    t_ours = min(timed(ours, 2))
    print(f"photos: {n} ({'Flickr8k' if args.data_dir else 'random'})")
    print(f"baseline float32 model.predict, batch 16: {n / t_base:6.1f} photos/s ({1000 * t_base / n:.0f} ms/photo)")
    print(f"captioner.features, {dtype}, batch {args.batch_size}:  {n / t_ours:6.1f} photos/s ({1000 * t_ours / n:.0f} ms/photo)")
    print(f"speed-up: {t_base / t_ours:.2f}x (goal: at least 2.5x)")


if __name__ == "__main__":
    main()
