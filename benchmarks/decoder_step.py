"""One decoder step on 3 beams, as beam search calls it: a plain tf.function against XLA.

    python benchmarks/decoder_step.py [--model assets/model] [--steps 100]

The step is the shipped decoder's ``step`` plus log-softmax, with numpy results, like
``captioner.decoding``; random features stand in for a photo (the work is the same). Prints the
first call (tracing, and XLA's compile) and the mean of ``--steps`` calls for each, alternating,
twice, and the largest difference between their outputs. TensorFlow backend.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from keras import ops

from captioner.pipeline import DEFAULT_MODEL, Captioner


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--steps", type=int, default=100)
    args = p.parse_args()
    decoder = Captioner.load(args.model).decoder

    def step(tokens, h, c, features, projected):
        logits, h, c, alpha, beta = decoder.step(tokens, h, c, features, projected, training=False)
        return ops.log_softmax(logits, axis=-1), h, c, alpha, beta

    functions = {"plain": tf.function(step, reduce_retracing=True), "xla": tf.function(step, jit_compile=True)}
    features = tf.constant(np.random.default_rng(0).random((3, 196, 512), np.float32))
    h, c, projected = decoder.prepare(features)
    tokens = np.full(3, 2, np.int32)
    for round_ in (1, 2):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn(tokens, h, c, features, projected)
            first = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(args.steps):
                [x.numpy() for x in fn(tokens, h, c, features, projected)]
            mean = (time.perf_counter() - start) / args.steps
            print(f"round {round_}, {name:<5}: first call {1000 * first:6.0f} ms, step {1000 * mean:5.2f} ms")
    outputs = [[x.numpy() for x in fn(tokens, h, c, features, projected)] for fn in functions.values()]
    print("largest difference plain - xla:", max(float(np.abs(a - b).max()) for a, b in zip(*outputs)))


if __name__ == "__main__":
    main()
