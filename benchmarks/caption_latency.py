"""Time to caption one photo (load, encoder, beam search), p50 and p90, beside VGG16's float32 predict.

    python benchmarks/caption_latency.py [--model assets/model] [--beam-size 3] [--runs 30]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import encoder, timed

from captioner.pipeline import DEFAULT_MODEL, Captioner

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--beam-size", type=int, default=3)
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args()

    captioner = Captioner.load(args.model)
    files = sorted(EXAMPLES.glob("*.jpg"))
    for f in files:  # warm up: trace the graphs for every beam width that occurs
        captioner.describe(f, beam_size=args.beam_size)
    times, parts = [], []
    for i in range(args.runs):
        times += timed(lambda: parts.append(captioner.describe(files[i % len(files)], beam_size=args.beam_size)
                                            .seconds), 1)

    baseline = encoder(captioner.config, "float32")
    x = np.zeros((1, captioner.config.image_size, captioner.config.image_size, 3), np.float32)
    baseline.predict(x, verbose=0)
    base = timed(lambda: baseline.predict(x, verbose=0), 10)
    ms = lambda v: 1000 * float(v)  # noqa: E731
    print(f"caption one photo (load + {captioner.compute_dtype} encoder + beam {args.beam_size}), {args.runs} runs: "
          f"p50 {ms(np.median(times)):.0f} ms, p90 {ms(np.percentile(times, 90)):.0f} ms (goal: p50 <= 250 ms)")
    print("  of which, p50: " + ", ".join(f"{part} {ms(np.median([p[part] for p in parts])):.0f} ms"
                                          for part in ("read", "encoder", "decoder")))
    print(f"baseline: VGG16 alone, float32 model.predict, one photo: p50 {ms(np.median(base)):.0f} ms")


if __name__ == "__main__":
    main()
