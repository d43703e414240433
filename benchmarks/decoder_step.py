"""One decoder step on 3 beams, as beam search calls it: the plain graph against XLA.

    python benchmarks/decoder_step.py [--model assets/model] [--steps 100]

Both are :class:`captioner.decoding._Steps` compilations of the shipped decoder's step
(gathering each beam's photo, log-softmax, numpy results), the two that
:func:`captioner.decoding.best_step_compiler` chooses between; random features stand in for a
photo (the work is the same). Prints the first call (tracing, and XLA's compile), the mean of
``--steps`` calls for each, alternating, over three rounds, the largest difference between their
outputs, and what the captioner chose on this machine. TensorFlow backend.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from keras import ops

from captioner.decoding import STEP_COMPILERS, _functions, _Steps
from captioner.encoder import feature_shape
from captioner.pipeline import DEFAULT_MODEL, Captioner


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--steps", type=int, default=100)
    args = p.parse_args()
    captioner = Captioner.load(args.model)
    decoder = captioner.decoder
    steps = _Steps(decoder, "graph")
    grid, _, width = feature_shape(captioner.config)
    shape = (grid * grid, width)  # (L, D)
    features = ops.convert_to_tensor(np.random.default_rng(0).random((1, *shape), np.float32))
    h, c, projected = (np.asarray(x) for x in steps._prepare(features))
    rows = np.zeros(3, np.int32)
    tokens, h, c, projected = np.full(3, 2, np.int32), h[rows], c[rows], ops.convert_to_tensor(projected)
    functions = {name: steps.compiled(name, gather=True) for name in STEP_COMPILERS}
    best = {name: float("inf") for name in functions}
    for round_ in (1, 2, 3):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn(tokens, rows, h, c, features, projected)
            first = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(args.steps):
                [np.asarray(x) for x in fn(tokens, rows, h, c, features, projected)]
            mean = (time.perf_counter() - start) / args.steps
            best[name] = min(best[name], mean)
            print(f"round {round_}, {name:<5}: first call {1000 * first:6.0f} ms, step {1000 * mean:5.2f} ms")
    outputs = [[np.asarray(x) for x in fn(tokens, rows, h, c, features, projected)] for fn in functions.values()]
    print("largest difference graph - xla:", max(float(np.abs(a - b).max()) for a, b in zip(*outputs)))
    print("best of the rounds:", ", ".join(f"{n} {1000 * t:.2f} ms" for n, t in best.items()),
          f"(xla / graph {best['xla'] / best['graph']:.2f})")
    captioner.warm_up()
    print("the captioner's step on this machine (decoder-step.json):", _functions(decoder).compiler)


if __name__ == "__main__":
    main()
