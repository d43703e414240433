"""Time to caption one photo (read, encoder, beam search) at beam 1, 3 and 5, beside VGG16's float32 predict.

    python benchmarks/caption_latency.py [--model assets/model] [--beam-sizes 1,3,5] [--runs 30]
    python benchmarks/caption_latency.py --model assets/seeds/inject     # a seed design

Prints p50 and p90 of the whole caption and p50 of each part, the encoder arithmetic and the
decoder step's compiler the captioner chose on this machine, and the goals of issue 10: a caption (encoder + beam 3) at most
0.5x float32 VGG16 ``predict`` of one photo, measured in the same run, and at most 100 ms.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import encoder, timed

from captioner.decoding import _functions
from captioner.pipeline import DEFAULT_MODEL, Captioner

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--beam-sizes", default="1,3,5")
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args()
    beams = [int(b) for b in args.beam_sizes.split(",")]

    captioner = Captioner.load(args.model)
    files = sorted(EXAMPLES.glob("*.jpg"))
    rows = {}
    for beam in beams:
        for f in files:  # warm up: trace the graphs for every beam width that occurs
            captioner.describe(f, beam_size=beam)
        times, parts = [], []
        for i in range(args.runs):
            times += timed(lambda: parts.append(captioner.describe(files[i % len(files)], beam_size=beam).seconds), 1)
        rows[beam] = times, parts

    baseline = encoder(captioner.config, "float32")
    x = np.zeros((1, captioner.config.image_size, captioner.config.image_size, 3), np.float32)
    baseline.predict(x, verbose=0)
    base = float(np.median(timed(lambda: baseline.predict(x, verbose=0), 10)))
    ms = lambda v: 1000 * float(v)  # noqa: E731
    step = _functions(captioner.decoder).compiler
    print(f"{args.model} ({captioner.design}), encoder {captioner.compute_dtype}, decoder step {step}, one photo, "
          f"{args.runs} runs per beam")
    print("| beam | caption p50 | p90 | read | encoder | decoder | encoder + decoder | / float32 predict |")
    print("|---|---|---|---|---|---|---|---|")
    for beam, (times, parts) in rows.items():
        part = {k: float(np.median([p[k] for p in parts])) for k in ("read", "encoder", "decoder")}
        model_time = float(np.median([p["encoder"] + p["decoder"] for p in parts]))
        print(f"| {beam} | {ms(np.median(times)):.0f} ms | {ms(np.percentile(times, 90)):.0f} ms | "
              f"{ms(part['read']):.0f} ms | {ms(part['encoder']):.0f} ms | {ms(part['decoder']):.0f} ms | "
              f"{ms(model_time):.0f} ms | {model_time / base:.2f}x |")
    print(f"baseline: VGG16 alone, float32 model.predict, one photo: p50 {ms(base):.0f} ms")
    if 3 in rows:
        model_time = float(np.median([p["encoder"] + p["decoder"] for p in rows[3][1]]))
        print(f"goals (encoder + beam 3): at most 0.5x float32 predict: {model_time / base:.2f}x "
              f"({'met' if model_time <= 0.5 * base else 'not met'}); at most 100 ms: {ms(model_time):.0f} ms "
              f"({'met' if model_time <= 0.1 else 'not met'})")


if __name__ == "__main__":
    main()
