"""Training in Keras's own loop: ``fit`` with a custom ``train_step``, and callbacks for
dev BLEU, atomic checkpoints, early stopping and plots.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from .config import ModelConfig, TrainConfig
from .vocab import Vocabulary
from .model import CaptionModel, save_model_weights

log = logging.getLogger(__name__)

def encode_captions(captions: list[list[str]], vocab: Vocabulary) -> list[list[int]]:
    return [[vocab.start_id] + vocab.encode(c) + [vocab.end_id] for c in captions]


BUCKETS = (10, 13, 16)  # word counts; a caption is padded to the first bucket it fits, else max_length


class CaptionBatches(keras.utils.PyDataset):
    """Batches ``{"features": (B, L, D) float16, "captions": (B, T) int32}``, reshuffled every epoch.

    ``rows[i]`` is the photo (row of ``features``) of caption ``i``. Captions
    are grouped by length so that a batch is padded only to its bucket: most
    captions are short, and the decoder then runs ~40% fewer steps. There are
    few buckets, so few graphs (or XLA programs) are built. Captions longer than
    ``max_length`` words are left out. The order depends only on
    (seed, epoch), so a resumed run sees the batches it would have seen.
    """

    def __init__(self, features: np.ndarray, rows: np.ndarray, captions: list[list[int]], batch_size: int,
                 max_length: int, seed: int = 0, shuffle: bool = True, epoch: int = 0):
        super().__init__()
        self.features, self.batch_size = features, batch_size
        self.seed, self.shuffle, self.epoch = seed, shuffle, epoch
        bounds = sorted({b for b in BUCKETS if b < max_length} | {max_length})
        self.buckets = {b: [] for b in bounds}
        for i, cap in enumerate(captions):
            bucket = next((b for b in bounds if len(cap) - 2 <= b), None)
            if bucket is not None:
                self.buckets[bucket].append(i)
        self.dropped = len(captions) - sum(map(len, self.buckets.values()))
        self.rows = np.asarray(rows)
        self.captions = captions
        self.plan()

    def plan(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = []
        for bucket, members in self.buckets.items():
            members = np.array(members, dtype=np.int64)
            if self.shuffle:
                rng.shuffle(members)
            end = len(members) // self.batch_size * self.batch_size if self.shuffle else len(members)
            batches += [(bucket, members[s:s + self.batch_size]) for s in range(0, end, self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        bucket, members = self.batches[index]
        caps = np.zeros((len(members), bucket + 2), np.int32)  # <start> w_1 .. w_n <end> <pad> ..
        for j, i in enumerate(members):
            caps[j, : len(self.captions[i])] = self.captions[i]
        return {"features": self.features[self.rows[members]], "captions": caps}

    def on_epoch_end(self):
        self.epoch += 1
        self.plan()

    def dataset(self):
        """What ``fit`` takes: one pass is one epoch, and the next pass reshuffles.

        Batches are ``{"features": (B, L, D) float16, "captions": (B, T + 1) int32}``.
        Under TensorFlow a tf.data pipeline whose signature leaves the caption
        length open (None), so every bucket fits; under other backends this
        PyDataset itself (Keras calls :meth:`on_epoch_end` after each epoch).
        """
        from . import backend

        def one_epoch():
            for i in range(len(self)):
                yield self[i]
            self.on_epoch_end()

        if backend.name() != "tensorflow":
            return self  # a keras.utils.PyDataset
        import tensorflow as tf

        data = backend.tf_dataset(one_epoch, {"features": ((None,) + self.features.shape[1:], "float16"),
                                              "captions": ((None, None), "int32")})
        return data.apply(tf.data.experimental.assert_cardinality(len(self))).prefetch(2)


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(run_dir: Path, trainer: CaptionModel, state: dict) -> Path:
    """Write weights, optimizer variables and state to a new folder, then switch ``latest`` to it.

    A kill at any moment leaves either the previous checkpoint or the new one
    in force, never a half-written one.
    """
    epoch = state["epoch"]
    final = run_dir / f"checkpoint-{epoch:03d}"
    tmp = run_dir / f".checkpoint-{epoch:03d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model_weights(trainer, tmp / "decoder.weights.h5")  # optimizer state goes to optimizer.npz
    np.savez(tmp / "optimizer.npz", *[np.asarray(v) for v in trainer.optimizer.variables])
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = run_dir / "latest.json.tmp"
    latest_tmp.write_text(json.dumps({"checkpoint": final.name}))
    os.replace(latest_tmp, run_dir / "latest.json")
    keep = {f"checkpoint-{e:03d}" for e in range(epoch - state.get("keep_last", 1) + 1, epoch + 1)}
    keep.add(state.get("best_checkpoint"))
    for old in run_dir.glob("checkpoint-*"):  # keep the newest few (for averaging) and the best
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "latest.json"
    if not pointer.exists():
        return None
    path = run_dir / json.loads(pointer.read_text())["checkpoint"]
    return path if path.is_dir() else None


def restore_checkpoint(path: Path, trainer: CaptionModel) -> dict:
    trainer.load_weights(path / "decoder.weights.h5")
    trainer.optimizer.build(trainer.trainable_variables)
    with np.load(path / "optimizer.npz", allow_pickle=False) as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(values) != len(trainer.optimizer.variables):
        raise ValueError(f"{path}: optimizer state does not match this model")
    for var, value in zip(trainer.optimizer.variables, values):
        var.assign(value)
    return json.loads((path / "state.json").read_text())



# --------------------------------------------------------------------------- callbacks
class DevBleu(keras.callbacks.Callback):
    """After every epoch: greedy captions for the dev photos, scored with BLEU-1..4."""

    def __init__(self, features: np.ndarray, references: list[list[list[str]]], vocab: Vocabulary, max_length: int,
                 batch_size: int = 250):
        super().__init__()
        self.features, self.references, self.vocab = features, references, vocab
        self.max_length, self.batch_size = max_length, batch_size

    def score(self) -> dict[str, float]:
        from .decoding import greedy
        from .evaluate import bleu_scores

        hypotheses = []
        for s in range(0, len(self.features), self.batch_size):
            batch = np.asarray(self.features[s:s + self.batch_size], np.float32)
            hypotheses += [c.words for c in greedy(self.model.decoder, self.vocab, batch, self.max_length)]
        return bleu_scores(self.references, hypotheses)

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        for name, value in self.score().items():
            logs[f"dev_{name}"] = value
        logs["dev_seconds"] = time.perf_counter() - start


class Checkpointer(keras.callbacks.Callback):
    """Atomic checkpoint every epoch, best-so-far tracking and early stopping on dev BLEU-4."""

    def __init__(self, run_dir: Path, state: dict, patience: int, monitor: str = "dev_bleu4"):
        super().__init__()
        self.run_dir, self.state, self.patience, self.monitor = run_dir, state, patience, monitor
        self.epoch_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        # Written into Keras's own logs, so that the CSV and TensorBoard callbacks after this one get it too.
        logs["train_seconds"] = time.perf_counter() - self.epoch_start - logs.get("dev_seconds", 0.0)
        logs = {k: float(v) for k, v in logs.items()}
        logs["epoch"] = epoch + 1
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        state = self.state
        state["history"].append(logs)
        state["epoch"] = epoch + 1
        value = logs.get(self.monitor, -np.inf)
        if value > state.get("best", -np.inf):
            state.update(best=value, best_epoch=epoch + 1, best_checkpoint=f"checkpoint-{epoch + 1:03d}", wait=0)
        else:
            state["wait"] = state.get("wait", 0) + 1
        save_checkpoint(self.run_dir, self.model, state)
        plot_history(state["history"], self.run_dir / "history.png")
        log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in logs.items()})
        if state["wait"] >= self.patience:
            log.info("dev %s has not improved for %d epochs: stopping", self.monitor, self.patience)
            self.model.stop_training = True


def plot_history(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["loss"] for h in history], "o-", label="training loss")
    ax1.plot(epochs, [h["xent"] for h in history], "s--", label="training cross-entropy")
    ax1.set_xlabel("epoch")
    ax1.set_title("Loss")
    ax1.legend()
    for n in (1, 4):
        key = f"dev_bleu{n}"
        if all(key in h for h in history):
            ax2.plot(epochs, [h[key] for h in history], "o-", label=f"dev BLEU-{n} (greedy)")
    ax2.set_xlabel("epoch")
    ax2.set_title("Dev BLEU")
    ax2.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def average_checkpoints(model: CaptionModel, run_dir: Path, state: dict, last: int, dev: "DevBleu") -> None:
    """Average the weights of the last ``last`` epochs; keep the average only if dev BLEU-4 improves.

    Leaves ``model`` holding the better of the best single epoch and the
    average, and records both scores in ``state``.
    """
    epochs = range(state["epoch"] - last + 1, state["epoch"] + 1)
    paths = [run_dir / f"checkpoint-{e:03d}" / "decoder.weights.h5" for e in epochs]
    if not all(p.is_file() for p in paths):
        log.info("not averaging: the last %d checkpoints are not all kept", last)
        return
    single = model.get_weights()
    stacks = []
    for p in paths:
        model.load_weights(p)
        stacks.append(model.get_weights())
    model.set_weights([np.mean(ws, axis=0) for ws in zip(*stacks)])
    dev.set_model(model)
    averaged = dev.score()["bleu4"]
    state["averaged"] = {"epochs": list(epochs), "dev_bleu4_greedy": averaged}
    if averaged > state["best"]:
        state["averaged"]["used"] = True
        log.info("averaging epochs %s: dev BLEU-4 %.4f > %.4f: using the average", list(epochs), averaged,
                 state["best"])
    else:
        state["averaged"]["used"] = False
        model.set_weights(single)
        log.info("averaging epochs %s: dev BLEU-4 %.4f <= %.4f: keeping epoch %d", list(epochs), averaged,
                 state["best"], state["best_epoch"])


# --------------------------------------------------------------------------- the whole run
def train(data_dir: Path, run_dir: Path, config: ModelConfig, tcfg: TrainConfig, encoder_weights: Path,
          cache_root: Path, resume: bool = False, dtype: str | None = None, progress: bool = True):
    """Train a decoder on cached features; returns (model, vocab, config, state, data, cache).

    With ``resume``, training continues from ``run_dir``'s latest checkpoint;
    the architecture recorded there must match ``config``.
    """
    from .flickr8k import load_data
    from .encoder import best_compute_dtype
    from .features import extract_features, feature_cache_dir
    from .model import build_model

    keras.utils.set_random_seed(tcfg.seed)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(data_dir, seed=tcfg.seed)
    splits = {name: data.split(name, tcfg.max_images) for name in ("train", "dev", "test")}
    if tcfg.eval_images:
        splits["dev"] = splits["dev"][: tcfg.eval_images]

    # Vocabulary from the training split only.
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if checkpoint:
        vocab = Vocabulary.load(run_dir / "vocab.json")
        saved = ModelConfig.load(run_dir / "config.json")
        if saved.architecture() != config.architecture():
            raise ValueError(f"--resume: {run_dir} holds a different architecture {saved.architecture()} "
                             f"than asked for {config.architecture()}")
    else:
        if resume:
            log.info("nothing to resume in %s: starting afresh", run_dir)
        train_caps = [c for f in splits["train"] for c in data.captions[f]]
        vocab = Vocabulary.build(train_caps, tcfg.min_word_count)
        vocab.save(run_dir / "vocab.json")
        config.save(run_dir / "config.json")
    (run_dir / "train_config.json").write_text(tcfg.to_json() + "\n")
    log.info("vocabulary: %d words (min count %d)", len(vocab), tcfg.min_word_count)

    # Features, extracted once and cached.
    dtype = dtype or best_compute_dtype()
    files = list(dict.fromkeys(splits["train"] + splits["dev"] + splits["test"]))
    cache_dir = feature_cache_dir(cache_root, files, config, encoder_weights, dtype)
    start = time.perf_counter()
    cache = extract_features([data.path(f) for f in files], cache_dir, config, encoder_weights, dtype=dtype,
                             progress=progress)
    log.info("features ready in %s (%.0f s)", cache_dir, time.perf_counter() - start)
    for name in splits:
        splits[name] = [f for f in splits[name] if f in cache]

    train_files = splits["train"]
    train_feats = cache.rows(train_files)  # (N, L, D) float16 in memory
    rows, caps = [], []
    for i, f in enumerate(train_files):
        for c in encode_captions(data.captions[f], vocab):
            rows.append(i)
            caps.append(c)
    state = {"epoch": 0, "history": [], "keep_last": tcfg.average_last}
    batches = CaptionBatches(train_feats, np.array(rows), caps, tcfg.batch_size, config.max_length,
                             seed=tcfg.seed)
    log.info("%d training captions in %d batches (%d longer than %d words left out)",
             len(caps), len(batches), batches.dropped, config.max_length)

    model = build_model(config, len(vocab), tcfg.alpha_c, tcfg.label_smoothing)
    schedule = keras.optimizers.schedules.ExponentialDecay(
        tcfg.learning_rate, decay_steps=max(1, len(batches)), decay_rate=tcfg.lr_decay, staircase=True)
    model.compile(optimizer=keras.optimizers.Adam(schedule, global_clipnorm=tcfg.clip_norm),
                  jit_compile=tcfg.jit_compile)
    if checkpoint:
        state = restore_checkpoint(checkpoint, model)
        state["keep_last"] = tcfg.average_last
        log.info("resumed from %s after epoch %d", checkpoint, state["epoch"])
    batches.epoch = state["epoch"]
    batches.plan()

    dev_feats = cache.rows(splits["dev"])
    dev_refs = [data.captions[f] for f in splits["dev"]]
    dev_bleu = DevBleu(dev_feats, dev_refs, vocab, config.max_length)
    callbacks = [
        dev_bleu,
        Checkpointer(run_dir, state, tcfg.patience),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=bool(checkpoint)),
    ]
    try:
        import tensorboard  # noqa: F401

        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False))
    except ImportError:
        log.info("tensorboard is not installed: no TensorBoard logs")
    if state["epoch"] < tcfg.epochs and state.get("wait", 0) < tcfg.patience:
        model.fit(batches.dataset(), epochs=tcfg.epochs, initial_epoch=state["epoch"], callbacks=callbacks,
                  verbose=2 if not progress else 1)
    best = run_dir / state["best_checkpoint"]
    model.load_weights(best / "decoder.weights.h5")
    log.info("best dev BLEU-4 %.4f after epoch %d", state["best"], state["best_epoch"])
    if tcfg.average_last > 1:
        average_checkpoints(model, run_dir, state, tcfg.average_last, dev_bleu)
    return model, vocab, config, state, data, cache, splits


def dataclasses_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)
