"""Would Winograd convolutions speed up feature extraction? One VGG16 layer, timed both ways.

    python benchmarks/winograd_layer.py [--size 28] [--channels 512] [--batch 32]

An exploration kept as a record, not a path the project uses. Extraction already runs its
bfloat16 convolutions at this CPU's matrix-product ceiling (see extraction.py), so only doing
fewer multiplications could make it faster. Winograd F(2x2, 3x3) (Lavin & Gray, 2016) does
2.25x fewer: Y = A^T [(G g G^T) * (B^T d B)] A per 4 x 4 tile. This times it on one layer
(default: block4_conv2's shape, the most favourable one) against the direct bfloat16
convolution, with the transforms compiled by XLA and the 16 tile products done by oneDNN in
bfloat16, and prints each one's largest error against float32.
"""
from __future__ import annotations

import argparse

import numpy as np
from common import timed

# F(2x2, 3x3) transforms (Lavin & Gray, 2016, section 4.1).
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)


def main():
    import tensorflow as tf

    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=28, help="height and width of the layer's input (even)")
    p.add_argument("--channels", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    n, size, c = args.batch, args.size, args.channels
    tiles = size // 2
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((n, size, size, c)).astype(np.float32))
    kernel = (rng.standard_normal((3, 3, c, c)) * 0.02).astype(np.float32)
    direct_kernel = tf.constant(kernel, tf.bfloat16)
    transformed = tf.constant(np.einsum("ai,ijck,bj->abck", G, kernel, G).reshape(16, c, c), tf.bfloat16)

    def b_t(v0, v1, v2, v3):  # B^T applied along one axis of a 4 x 4 tile
        return [v0 - v2, v1 + v2, v2 - v1, v1 - v3]

    def a_t(m0, m1, m2, m3):  # A^T applied along one axis
        return [m0 + m1 + m2, m1 - m2 - m3]

    @tf.function(jit_compile=True)
    def input_transform(x):  # (N, S, S, C) -> (16, N * S/2 * S/2, C): B^T d B for every tile
        padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        d = [[padded[:, i:i + 2 * tiles:2, j:j + 2 * tiles:2, :] for j in range(4)] for i in range(4)]
        rows = [b_t(*(d[i][j] for i in range(4))) for j in range(4)]  # rows[j][a]
        v = [item for a in range(4) for item in b_t(*(rows[j][a] for j in range(4)))]  # index 4a + b
        return tf.cast(tf.reshape(tf.stack(v), (16, -1, c)), tf.bfloat16)

    @tf.function(jit_compile=True)
    def output_transform(m):  # (16, P, K) -> (N, S, S, K): A^T m A, each tile giving 2 x 2 outputs
        m = tf.reshape(tf.cast(m, tf.float32), (4, 4, n, tiles, tiles, c))
        rows = a_t(m[0], m[1], m[2], m[3])  # each (4, N, T, T, K), indexed by b
        (y00, y01), (y10, y11) = (a_t(r[0], r[1], r[2], r[3]) for r in rows)
        top = tf.reshape(tf.stack([y00, y01], -2), (n, tiles, 2 * tiles, c))
        bottom = tf.reshape(tf.stack([y10, y11], -2), (n, tiles, 2 * tiles, c))
        return tf.reshape(tf.stack([top, bottom], 2), (n, size, size, c))

    @tf.function
    def winograd(x):
        return output_transform(tf.matmul(input_transform(x), transformed))

    @tf.function
    def direct(x):
        return tf.nn.conv2d(tf.cast(x, tf.bfloat16), direct_kernel, 1, "SAME")

    reference = tf.nn.conv2d(x, tf.constant(kernel), 1, "SAME")
    scale = float(tf.reduce_max(tf.abs(reference)))
    print(f"layer: {n} x {size} x {size} x {c} -> {c}, 3 x 3")
    for name, fn in (("direct bfloat16", direct), ("Winograd F(2x2,3x3) bfloat16", winograd)):
        error = float(tf.reduce_max(tf.abs(tf.cast(fn(x), tf.float32) - reference))) / scale
        best = min(timed(lambda: fn(x).numpy(), 5))
        print(f"{name:<30} {1000 * best:6.0f} ms   largest error {error:.4f} of the largest output")


if __name__ == "__main__":
    main()
