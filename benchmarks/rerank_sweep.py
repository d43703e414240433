"""Rerankers of a model folder's candidate captions, scored on the dev split: is the top of the beam the best pick?

    python benchmarks/rerank_sweep.py --model assets/model --beam-sizes 3,5 --samples 0,10 --neighbours 30

For every dev photo the decoder proposes candidates (the finished captions of a beam search, plus with
``--samples N`` N captions drawn at random), and each rule picks one:

- ``beam``: the highest length-normalised log-probability (what the app says);
- ``mbr-cider`` / ``mbr-bleu``: minimum Bayes risk, the candidate with the highest expected CIDEr-D
  (document frequencies from the training references) or smoothed sentence BLEU-4 against the
  model's own distribution: the samples, each one draw, or without samples the beam's captions
  weighted by their probability;
- ``knnK-cider``: the candidate most like the human captions of the K training photos nearest in the
  encoder's mean feature (consensus reranking, Devlin et al. 2015). The caption is still the decoder's
  own for this photo, but the app would need the training captions and features at hand.

Prints BLEU-1/4 (nltk, as ``evaluate``), CIDEr-D, broken endings and repeats per candidate set and rule.
Dev only; the decoding rules (``whole_endings``, ``block_repeats``) are the folder's unless overridden.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from captioner.cider import CiderD, corpus_cider
from captioner.decoding import beam_search_batch, sample
from captioner.evaluate import bleu_scores
from captioner.grammar import broken_ending, repeats
from captioner.training.run import folder_features

BATCH = 50  # photos decoded together


def candidates(captioner, features, beam: int, samples: int, rng) -> list[list[tuple[list[str], float | None]]]:
    """Per photo: the beam's finished captions with their log-probabilities, best first, then the samples
    (log-probability None; a caption drawn twice is there twice)."""
    cfg = captioner.config
    rules = {"whole_endings": cfg.whole_endings, "block_repeats": cfg.block_repeats}
    out = []
    for s in range(0, len(features), BATCH):
        for cap in beam_search_batch(captioner.decoder, captioner.vocab, features[s:s + BATCH], beam,
                                     cfg.max_length, cfg.length_penalty, **rules):
            out.append([(c.words, c.log_prob) for c in [cap] + cap.alternatives])
        if samples:
            tokens = sample(captioner.decoder, captioner.vocab, features[s:s + BATCH], samples, cfg.max_length,
                            rng, **rules)
            for i, row in enumerate(tokens):
                out[s + i // samples].append((captioner.vocab.decode(row[1:]), None))
    return out


def mbr(pool, utility) -> int:
    """The index of the candidate with the highest expected utility against the model's distribution."""
    drawn = [j for j, (_, lp) in enumerate(pool) if lp is None]
    if drawn:
        evidence, weight = drawn, np.ones(len(drawn))
    else:
        evidence = list(range(len(pool)))
        lp = np.array([x for _, x in pool])
        weight = np.exp(lp - lp.max())
    u = np.array([[utility(a, b) for b in evidence] for a in range(len(pool))])
    return int(np.argmax(u @ (weight / weight.sum())))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("assets/model"))
    p.add_argument("--data-dir", type=Path, default=Path("../shared/flickr8k"))
    p.add_argument("--cache-dir", type=Path, default=Path("cache"))
    p.add_argument("--beam-sizes", default="3,5")
    p.add_argument("--samples", default="0", help="captions drawn per photo, added to the beam's")
    p.add_argument("--neighbours", default="30", help="training photos whose captions vote (knnK-cider)")
    p.add_argument("--block-repeats", action=argparse.BooleanOptionalAction, default=None,
                   help="override the folder's rule")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    captioner, data, splits, cache, cache_dir, dtype = folder_features(args.model, args.data_dir, args.cache_dir)
    if args.block_repeats is not None:
        captioner.config = dataclasses.replace(captioner.config, block_repeats=args.block_repeats)
    dev, train = splits["dev"][: args.max_images], splits["train"]
    features = np.asarray(cache.rows(dev), np.float32)  # (N, L, D)
    references = [data.captions[f] for f in dev]
    scorer = CiderD([data.captions[f] for f in train])  # document frequencies of the training references
    train_vectors = [[scorer.vector(r) for r in data.captions[f]] for f in train]

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    pooled = unit(np.concatenate([np.asarray(cache.rows(train[s:s + 500]), np.float32).mean(axis=1)
                                  for s in range(0, len(train), 500)]))  # (train, D)
    nearest = np.argsort(-(unit(features.mean(axis=1)) @ pooled.T), axis=1)  # (N, train), nearest first
    smooth = SmoothingFunction().method1

    print(f"{args.model}: {len(dev)} dev photos, features {cache_dir} ({dtype}); "
          f"block_repeats {captioner.config.block_repeats}")
    print("beam  samples  rule           BLEU-1  BLEU-4  CIDEr-D  broken%  repeats%  candidates")
    rng = np.random.default_rng(args.seed)
    for beam in [int(b) for b in args.beam_sizes.split(",")]:
        for n_samples in [int(x) for x in args.samples.split(",")]:
            pools = candidates(captioner, features, beam, n_samples, rng)
            rules = {"beam": lambda i, pool: 0}

            def mbr_cider(i, pool):
                vectors = [scorer.vector(w) for w, _ in pool]
                return mbr(pool, lambda a, b: scorer.against(vectors[a], [vectors[b]]))

            def mbr_bleu(i, pool):
                return mbr(pool, lambda a, b: sentence_bleu([pool[b][0]], pool[a][0], smoothing_function=smooth))

            rules["mbr-cider"], rules["mbr-bleu"] = mbr_cider, mbr_bleu
            for k in [int(x) for x in args.neighbours.split(",") if x]:
                def knn(i, pool, k=k):
                    votes = [v for j in nearest[i, :k] for v in train_vectors[j]]
                    return int(np.argmax([scorer.against(scorer.vector(w), votes) for w, _ in pool]))

                rules[f"knn{k}-cider"] = knn
            for name, rule in rules.items():
                said = [pool[rule(i, pool)][0] for i, pool in enumerate(pools)]
                row = bleu_scores(references, said)
                print(f"{beam:4d}  {n_samples:7d}  {name:13s}  {100 * row['bleu1']:6.2f}  {100 * row['bleu4']:6.2f}  "
                      f"{100 * corpus_cider(references, said):7.2f}  {100 * np.mean([broken_ending(w) for w in said]):7.2f}"
                      f"  {100 * np.mean([repeats(w) for w in said]):8.2f}  {np.mean([len(q) for q in pools]):10.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
