"""Callbacks for ``fit``: dev BLEU and CIDEr-D after each epoch, the checkpoint and early stopping, and the plot."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import keras
import numpy as np

from ..vocab import Vocabulary
from .checkpoints import save_checkpoint
from .record import Run

log = logging.getLogger(__name__)


class DevScores(keras.callbacks.Callback):
    """After every epoch: greedy captions for the dev photos, scored with BLEU-1..4 and CIDEr-D (``cider``)."""

    def __init__(self, features: np.ndarray, references: list[list[list[str]]], vocab: Vocabulary, max_length: int,
                 batch_size: int = 250, whole_endings: bool = True, block_repeats: bool = False):
        super().__init__()
        self.features, self.references, self.vocab = features, references, vocab
        self.max_length, self.batch_size, self.whole_endings = max_length, batch_size, whole_endings
        self.block_repeats = block_repeats

    def score(self) -> dict[str, float]:
        from ..cider import corpus_cider
        from ..decoding import greedy
        from ..evaluate import bleu_scores

        hypotheses = []
        for s in range(0, len(self.features), self.batch_size):
            batch = np.asarray(self.features[s:s + self.batch_size], np.float32)
            batch = np.asarray(self.model.region_features(batch), np.float32)  # block5 fine-tuning: its regions
            hypotheses += [c.words for c in greedy(self.model.decoder, self.vocab, batch, self.max_length,
                                                   whole_endings=self.whole_endings,
                                                   block_repeats=self.block_repeats)]
        return {**bleu_scores(self.references, hypotheses), "cider": corpus_cider(self.references, hypotheses)}

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        for name, value in self.score().items():
            logs[f"dev_{name}"] = value
        logs["dev_seconds"] = time.perf_counter() - start


class Checkpointer(keras.callbacks.Callback):
    """After every epoch: record it in the :class:`Run`, write an atomic checkpoint, plot, stop early."""

    def __init__(self, run: Run):
        super().__init__()
        self.run, self.monitor = run, run.monitor
        self.epoch_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        # Written into Keras's own logs, so that the CSV and TensorBoard callbacks after this one get it too.
        logs["train_seconds"] = time.perf_counter() - self.epoch_start - logs.get("dev_seconds", 0.0)
        record = {k: float(v) for k, v in logs.items()}
        record["epoch"] = epoch + 1
        record["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        run = self.run
        run.end_epoch(record)
        save_checkpoint(run, self.model)
        plot_history(run.history, run.run_dir / "history.png")
        log.info("epoch %d: %s", run.epoch, {k: round(v, 4) for k, v in record.items()})
        if run.finished() and run.epoch < run.planned_epochs:
            log.info("dev %s has not improved for %d epochs: stopping", self.monitor, run.train_config.patience)
            self.model.stop_training = True


def plot_history(history: list[dict], path: Path) -> None:
    """Training loss and dev BLEU per epoch, as a PNG (replaced atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["loss"] for h in history], "o-", label="training loss")
    if all("xent" in h for h in history):
        ax1.plot(epochs, [h["xent"] for h in history], "s--", label="training cross-entropy")
    ax1.set_xlabel("epoch")
    ax1.set_title("Loss")
    ax1.legend()
    for key, label in (("dev_bleu1", "BLEU-1"), ("dev_bleu4", "BLEU-4"), ("dev_cider", "CIDEr-D")):
        if all(key in h for h in history):
            ax2.plot(epochs, [h[key] for h in history], "o-", label=f"dev {label} (greedy)")
    ax2.set_xlabel("epoch")
    ax2.set_title("Dev scores")
    ax2.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
