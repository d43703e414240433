"""Feature extraction speed: each of this project's paths against plain float32 ``model.predict``.

    python benchmarks/extraction.py [--data-dir ../shared/flickr8k] [--photos 128] [--repeat 3]

All run VGG16 up to block5_conv3 on the same photos in the same process, as
captioner.features runs them (batches of 32): float32 and bfloat16 call the
model directly in a tf.function; int8 runs the encoder quantised by TFLite,
calibrated on the first 32 photos. The default, marked, is the path that
:func:`captioner.encoder.best_compute_dtype` measured fastest on this machine
(what ``train.py`` uses without ``--dtype``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import encoder, photos, timed

from captioner.backend import int8_encode_function
from captioner.config import ModelConfig
from captioner.encoder import best_compute_dtype, encode_function
from captioner.features import CALIBRATION_PHOTOS


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--photos", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each, alternating; the best counts")
    args = p.parse_args()
    config = ModelConfig()
    x = photos(args.data_dir, args.photos, config)
    n = len(x)

    baseline = encoder(config, "float32")
    baseline.predict(x[:16], batch_size=16, verbose=0)  # warm up
    default = best_compute_dtype(config)
    functions = {"float32": encode_function(baseline, "float32"),
                 "bfloat16": encode_function(encoder(config, "bfloat16"), "bfloat16"),
                 "int8": int8_encode_function(baseline, x[:CALIBRATION_PHOTOS])}

    def run(fn):
        return lambda: [np.asarray(fn(x[s:s + args.batch_size])).astype(np.float16) for s in range(0, n, args.batch_size)]

    for fn in functions.values():
        run(fn)()  # warm up (traces once per batch shape)
    # Alternate them, and keep each one's best run: on a shared (virtual) machine a neighbour's
    # load slows single runs by up to a third, and the best run is the least disturbed one.
    times = {"predict": []} | {name: [] for name in functions}
    for _ in range(args.repeat):
        times["predict"] += timed(lambda: baseline.predict(x, batch_size=16, verbose=0), 1)
        for name, fn in functions.items():
            times[name] += timed(run(fn), 1)
    best = {name: min(t) for name, t in times.items()}
    flops = conv_flops(baseline)  # per photo; the convolutions are nearly all the work
    print(f"photos: {n} ({'Flickr8k' if args.data_dir else 'random'}); "
          f"convolution work {flops / 1e9:.1f} GFLOP per photo")
    t_base = best["predict"]
    print(f"baseline float32 model.predict, batch 16: {n / t_base:6.1f} photos/s ({1000 * t_base / n:.0f} ms/photo, "
          f"{n * flops / t_base / 1e9:.0f} GFLOP/s)")
    for name in functions:
        t = best[name]
        mark = "  <- default here" if name == default else ""
        print(f"captioner.features, {name:<9} {n / t:6.1f} photos/s ({1000 * t / n:.0f} ms/photo, "
              f"{n * flops / t / 1e9:.0f} GFLOP/s): {t_base / t:.2f}x{mark}")
    print(f"goal: the default ({default}) at least 2.5x: {t_base / best[default]:.2f}x "
          f"({'met' if t_base / best[default] >= 2.5 else 'not met'})")
    # What this processor can do at all: a large matrix product in each floating-point dtype.
    # Convolutions running near these rates leave no more to gain without doing fewer operations.
    peak = {d: matmul_rate(d) for d in ("float32", "bfloat16")}
    print(f"matrix-product ceiling: {peak['float32']:.0f} GFLOP/s float32, {peak['bfloat16']:.0f} GFLOP/s bfloat16")


def matmul_rate(dtype: str, size: int = 2048, repeat: int = 10) -> float:
    """GFLOP/s of a size x size matrix product in ``dtype``, best of three runs of ``repeat``."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b = (tf.cast(rng.standard_normal((size, size), np.float32), dtype) for _ in range(2))
    product = tf.function(tf.linalg.matmul)
    product(a, b).numpy()
    best = min(timed(lambda: [product(a, b) for _ in range(repeat)][-1].numpy(), 3)) / repeat
    return 2 * size ** 3 / best / 1e9


def conv_flops(model) -> float:
    """Floating-point operations of one photo through the model's convolutions (2 per multiply-add)."""
    total = 0.0
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += 2.0 * h * w * kh * kw * cin * cout
    return total


if __name__ == "__main__":
    main()
