"""Does the app's encoder arithmetic keep the captions? Test-split BLEU through each serving path.

    python benchmarks/serving_bleu.py --model assets/model --data-dir ../shared/flickr8k [--photos 1000]

For float32, bfloat16 and int8 (TFLite, calibrated on the bundled example photos: what the app
and the CLI run when it is the fastest on the machine), encodes the test photos through
``Captioner.features`` (the serving path, batches of 8 as the app's batcher makes), captions
them at the folder's beam width and prints BLEU-1..4 and CIDEr-D, each path's time per photo, and
its BLEU-4 difference from float32 against the bound of issue 10 (0.005).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from captioner.cider import corpus_cider
from captioner.encoder import available_dtypes
from captioner.evaluate import bleu_scores, decode_all
from captioner.flickr8k import load_data
from captioner.image import load_and_preprocess
from captioner.pipeline import Captioner

BOUND = 0.005


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, default=Path("assets/model"))
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--photos", type=int, default=None, help="the first N test photos (default: all)")
    args = p.parse_args()
    data = load_data(args.data_dir)
    files = data.split("test")[: args.photos]
    references = [data.captions[f] for f in files]
    rows = {}
    for dtype in available_dtypes():
        captioner = Captioner.load(args.model, compute_dtype=dtype)
        pixels = [load_and_preprocess(data.path(f), captioner.config) for f in files]
        captioner.features(np.stack(pixels[:8]))  # warm up (traced, or the int8 model loaded)
        start = time.perf_counter()
        features = np.concatenate([captioner.features(np.stack(pixels[s:s + 8])) for s in range(0, len(files), 8)])
        seconds = (time.perf_counter() - start) / len(files)
        hypotheses = [c.words for c in decode_all(captioner, features, captioner.config.beam_size)]
        rows[dtype] = {**bleu_scores(references, hypotheses), "cider": corpus_cider(references, hypotheses),
                       "ms": 1000 * seconds}
        print(f"{dtype}: done", flush=True)
    print(f"\ntest split, {len(files)} photos, beam {captioner.config.beam_size}, encoder through the serving path")
    print("| encoder | BLEU-1 | BLEU-4 | CIDEr-D | ms/photo | BLEU-4 - float32 | within 0.005 |")
    print("|---|---|---|---|---|---|---|")
    base = rows["float32"]["bleu4"]
    for dtype, r in rows.items():
        delta = r["bleu4"] - base
        print(f"| {dtype} | {100 * r['bleu1']:.2f} | {100 * r['bleu4']:.2f} | {100 * r['cider']:.2f} | "
              f"{r['ms']:.0f} | {delta:+.4f} | {'yes' if abs(delta) <= BOUND else 'NO'} |")


if __name__ == "__main__":
    main()
