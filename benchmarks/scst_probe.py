"""A short self-critical probe: N steps from a model folder, greedy CIDEr-D on 300 dev photos every K steps.

    python benchmarks/scst_probe.py LR XE_WEIGHT PHOTOS STEPS EVERY      # from assets/model
    python benchmarks/scst_probe.py 5e-5 0.5 16 120 30     # what the README reports

Uses train.py's feature cache (cache/, float32 or bfloat16 as measured) and weights/ (build-encoder).
Prints the step, seconds, mean sampled reward, the last batch's logs and (dev CIDEr-D, mean length,
three dev captions). Nothing is saved.
"""
import sys
import time
from pathlib import Path
import keras
import numpy as np
from captioner.config import TrainConfig
from captioner.flickr8k import load_data
from captioner.training.run import prepare_features
from captioner.training.scst import start_from_folder, SelfCriticalBatches
from captioner.training.batches import encode_captions
from captioner.training.checkpoints import load_decoder_weights
from captioner.model import SelfCriticalModel, build_decoder
from captioner.cider import CiderD, corpus_cider
from captioner.decoding import greedy

lr, xe, photos, steps, every = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
config, vocab, start, _ = start_from_folder(Path("assets/model"))
tcfg = TrainConfig()
data = load_data(Path("../shared/flickr8k"), seed=tcfg.seed)
splits, cache, cache_dir, weights, dtype = prepare_features(data, config, tcfg, Path("weights/vgg16_block5_conv3.weights.h5"), Path("cache"), None, progress=False)
refs = [data.captions[f] for f in splits["train"]]
scorer = CiderD(refs)
keras.utils.set_random_seed(0)
model = SelfCriticalModel(build_decoder(config, len(vocab)), xe_weight=xe)
model.build()
model.compile(optimizer=keras.optimizers.Adam(lr, global_clipnorm=5.0))
load_decoder_weights(model, start, file=True)
enc = None
if xe:
    enc = [[c for c in encode_captions(r, vocab) if len(c) - 2 <= config.max_length] or encode_captions(r, vocab)[:1] for r in refs]
b = SelfCriticalBatches(model.decoder, vocab, cache.rows(splits["train"]), scorer, photos, 5, 16, seed=0, whole_endings=True, references=enc)
dev_f = np.asarray(cache.rows(splits["dev"][:300]), np.float32)
dev_r = [data.captions[f] for f in splits["dev"][:300]]
def dev():
    hyp = [c.words for c in greedy(model.decoder, vocab, dev_f, config.max_length, whole_endings=True)]
    return corpus_cider(dev_r, hyp), np.mean([len(h) for h in hyp]), " | ".join(" ".join(h) for h in hyp[:3])
print("start", dev(), flush=True)
t0 = time.time(); rewards = []
for i in range(steps):
    batch = b[i]
    logs = model.train_on_batch(batch, return_dict=True)
    rewards.append(float(batch["reward"].mean()))
    if (i + 1) % every == 0:
        print(i + 1, f"{time.time()-t0:.0f}s", "reward", round(np.mean(rewards[-every:]), 3), logs, dev(), flush=True)
