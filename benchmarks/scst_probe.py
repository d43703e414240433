"""A short self-critical probe: N steps from a model folder, greedy dev CIDEr-D every K steps.

    python benchmarks/scst_probe.py --lr 5e-5 --photos 16 --steps 120 --every 30
    python benchmarks/scst_probe.py --lr 5e-5 --xe 0.5 --photos 16 --steps 60 --every 30

Uses train.py's feature cache (cache/, made by train.py or any earlier run), read with the
folder's own encoder in the arithmetic its decoder was trained on. Prints, every K steps: the
step, seconds spent sampling, scoring and in the training step, the mean sampled reward, the mean
sampled length, and greedy dev scores (CIDEr-D, BLEU-4, mean length, broken endings, two
captions). Nothing is saved.
"""
import argparse
import time
from pathlib import Path

import keras
import numpy as np

from captioner.cider import CiderD, corpus_cider
from captioner.config import TrainConfig
from captioner.decoding import greedy
from captioner.evaluate import bleu_scores
from captioner.flickr8k import load_data
from captioner.grammar import broken_ending
from captioner.model import SelfCriticalModel, build_decoder
from captioner.pipeline import encoder_path
from captioner.training.batches import encode_captions
from captioner.training.checkpoints import load_decoder_weights
from captioner.training.run import prepare_features
from captioner.training.scst import SelfCriticalBatches, start_from_folder

p = argparse.ArgumentParser()
p.add_argument("--model", type=Path, default=Path("assets/model"))
p.add_argument("--data-dir", type=Path, default=Path("../shared/flickr8k"))
p.add_argument("--lr", type=float, default=5e-5)
p.add_argument("--xe", type=float, default=0.0, help="weight of the references' cross-entropy")
p.add_argument("--photos", type=int, default=16, help="photos per step")
p.add_argument("--samples", type=int, default=5)
p.add_argument("--steps", type=int, default=120)
p.add_argument("--every", type=int, default=30)
p.add_argument("--dev-photos", type=int, default=300)
p.add_argument("--baseline", choices=("mean", "greedy"), default="mean")
args = p.parse_args()

config, vocab, start, _, features_dtype = start_from_folder(args.model)
tcfg = TrainConfig()
data = load_data(args.data_dir, seed=tcfg.seed)
splits, cache, _, _, _ = prepare_features(data, config, tcfg, encoder_path(args.model), Path("cache"),
                                          features_dtype or "bfloat16", progress=False)  # what its decoder read
refs = [data.captions[f] for f in splits["train"]]
scorer = CiderD(refs)
keras.utils.set_random_seed(0)
model = SelfCriticalModel(build_decoder(config, len(vocab)), xe_weight=args.xe)
model.build()
model.compile(optimizer=keras.optimizers.Adam(args.lr, global_clipnorm=tcfg.clip_norm))
load_decoder_weights(model, start, file=True)
enc = None
if args.xe:
    enc = [[c for c in encode_captions(r, vocab) if len(c) - 2 <= config.max_length] or encode_captions(r, vocab)[:1]
           for r in refs]
batches = SelfCriticalBatches(model.decoder, vocab, cache.rows(splits["train"]), scorer, args.photos, args.samples,
                              min(tcfg.scst_max_words, config.max_length), seed=0, whole_endings=True,
                              references=enc, baseline=args.baseline)
dev_f = np.asarray(cache.rows(splits["dev"][: args.dev_photos]), np.float32)
dev_r = [data.captions[f] for f in splits["dev"][: args.dev_photos]]


def dev():
    hyp = [c.words for c in greedy(model.decoder, vocab, dev_f, config.max_length, whole_endings=True)]
    return (f"dev CIDEr-D {corpus_cider(dev_r, hyp):.4f} BLEU-4 {bleu_scores(dev_r, hyp)['bleu4']:.4f} "
            f"length {np.mean([len(h) for h in hyp]):.2f} broken {np.mean([broken_ending(h) for h in hyp]):.3f} | "
            + " | ".join(" ".join(h) for h in hyp[:2]))


print("start", dev(), flush=True)
sampling = training = 0.0
rewards, lengths = [], []
for i in range(args.steps):
    t0 = time.perf_counter()
    batch = batches[i % len(batches)]  # samples and scores them
    t1 = time.perf_counter()
    logs = model.train_on_batch(batch, return_dict=True)
    t2 = time.perf_counter()
    sampling, training = sampling + t1 - t0, training + t2 - t1
    rewards.append(float(batch["reward"].mean()))
    lengths.append(float((batch["captions"][:, 1:] > vocab.end_id).sum(axis=1).mean()))
    if (i + 1) % args.every == 0:
        print(f"step {i + 1}: sampling+scoring {sampling:.0f} s, training {training:.0f} s, "
              f"reward {np.mean(rewards[-args.every:]):.3f}, sampled length {np.mean(lengths[-args.every:]):.2f}, "
              f"loss {logs['loss']:.4f}; {dev()}", flush=True)
