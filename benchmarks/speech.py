"""Time to speak one caption into a WAV file, through each engine, as the app calls it.

    python benchmarks/speech.py [--runs 20]

Calls ``captioner.speech.synthesize`` with pyttsx3 (one long-lived child process serves every
request) and with the espeak-ng program, alternately, on captions of different lengths, after one
warm-up call each (the first pyttsx3 call starts the child). Prints p50 and p90 per engine.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import timed

from captioner import speech

CAPTIONS = ["Probably a dog running on grass.",
            "Possibly a man and a woman are sitting on a bench in front of a building.",
            "I'm not sure, but perhaps a group of people are standing on a street."]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "speech.wav"
        times = {engine: [] for engine in speech.ENGINES}
        for engine in speech.ENGINES:
            speech.synthesize(CAPTIONS[0], out, engines=(engine,))  # warm up
        for i in range(args.runs):
            for engine in speech.ENGINES:
                text = CAPTIONS[i % len(CAPTIONS)]
                times[engine] += timed(lambda: speech.synthesize(text, out, engines=(engine,)), 1)  # noqa: B023
    print(f"one caption spoken into a WAV file, {args.runs} runs each, alternating")
    for engine, values in times.items():
        print(f"  {engine:<10} p50 {1000 * np.median(values):5.0f} ms, p90 {1000 * np.percentile(values, 90):5.0f} ms")


if __name__ == "__main__":
    main()
