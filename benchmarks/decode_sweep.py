"""Decoding settings of a model folder, scored on the dev split (or train): beam width x length penalty.

    python benchmarks/decode_sweep.py --model assets/model --data-dir ../shared/flickr8k
    python benchmarks/decode_sweep.py --model runs/more/model --beam-sizes 3 --length-penalties 0,0.5,0.7,1
    python benchmarks/decode_sweep.py --split train --max-images 1000 --beam-sizes 1   # against dev: overfitting

Reads the features from train.py's cache (``cache/``, extracted with the folder's own encoder in the
arithmetic its decoder was trained on; extracted there first if missing) and prints, per setting,
BLEU-1 and BLEU-4 (nltk, as ``evaluate``), CIDEr-D, the brevity penalty, the mean caption length
and the shares of broken endings and repeats; and how often the split's human captions break those
two rules. For choosing on dev: the test split is never read.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import nltk.translate.bleu_score as bleu
import numpy as np

from captioner.evaluate import score_features
from captioner.grammar import broken_ending, repeats
from captioner.training.run import folder_features


def brevity_penalty(references, hypotheses) -> float:
    """nltk corpus_bleu's brevity penalty: the hypotheses' length against their closest references'."""
    hyp = sum(len(h) for h in hypotheses)
    return bleu.brevity_penalty(sum(bleu.closest_ref_length(r, len(h)) for r, h in zip(references, hypotheses)), hyp)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("assets/model"))
    p.add_argument("--data-dir", type=Path, default=Path("../shared/flickr8k"))
    p.add_argument("--cache-dir", type=Path, default=Path("cache"))
    p.add_argument("--beam-sizes", default="1,3,5")
    p.add_argument("--length-penalties", default="0,0.3,0.5,0.7,0.9,1.2")
    p.add_argument("--split", choices=("dev", "train"), default="dev",
                   help="train: how much better the model does on photos it learnt from (never test)")
    p.add_argument("--max-images", type=int, default=None, help="the first N photos of the split only")
    args = p.parse_args()

    captioner, data, splits, cache, cache_dir, dtype = folder_features(args.model, args.data_dir, args.cache_dir)
    files = splits[args.split][: args.max_images]
    features = cache.rows(files)
    references = [data.captions[f] for f in files]  # tokenised
    print(f"{args.model}: {len(files)} {args.split} photos, features {cache_dir} ({dtype}); "
          f"shipped: beam {captioner.config.beam_size}, length penalty {captioner.config.length_penalty}")
    people = [r for refs in references for r in refs]
    print(f"their {len(people)} human captions: {100 * np.mean([broken_ending(r) for r in people]):.2f}% end "
          f"mid-phrase, {100 * np.mean([repeats(r) for r in people]):.2f}% say a thing twice (captioner.grammar)")
    print("beam  penalty  BLEU-1  BLEU-4  CIDEr-D  brevity  words  broken%  repeats%  seconds")
    base = captioner.config
    for beam in [int(b) for b in args.beam_sizes.split(",")]:
        for penalty in [float(x) for x in args.length_penalties.split(",")]:
            if beam == 1 and penalty != float(args.length_penalties.split(",")[0]):
                continue  # greedy decoding does not read the length penalty
            captioner.config = dataclasses.replace(base, length_penalty=penalty)
            start, decoded = time.perf_counter(), {}
            row = score_features(captioner, features, references, (beam,), captions=decoded)[beam]
            seconds = time.perf_counter() - start
            hypotheses = [c.words for c in decoded[beam]]
            words = sum(map(len, hypotheses)) / len(hypotheses)
            print(f"{beam:4d}  {penalty:7.2f}  {100 * row['bleu1']:6.2f}  {100 * row['bleu4']:6.2f}  "
                  f"{100 * row['cider']:7.2f}  {brevity_penalty(references, hypotheses):7.3f}  {words:5.2f}  "
                  f"{100 * row['broken_endings']:7.2f}  {100 * row['repeats']:8.2f}  {seconds:7.1f}", flush=True)

if __name__ == "__main__":
    main()
