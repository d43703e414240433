"""Callbacks for ``fit``: dev BLEU after each epoch, the checkpoint and early stopping, and the plot."""
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


class DevBleu(keras.callbacks.Callback):
    """After every epoch: greedy captions for the dev photos, scored with BLEU-1..4."""

    def __init__(self, features: np.ndarray, references: list[list[list[str]]], vocab: Vocabulary, max_length: int,
                 batch_size: int = 250):
        super().__init__()
        self.features, self.references, self.vocab = features, references, vocab
        self.max_length, self.batch_size = max_length, batch_size

    def score(self) -> dict[str, float]:
        from ..decoding import greedy
        from ..evaluate import bleu_scores

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
    """After every epoch: record it in the :class:`Run`, write an atomic checkpoint, plot, stop early."""

    def __init__(self, run: Run, monitor: str = "dev_bleu4"):
        super().__init__()
        self.run, self.monitor = run, monitor
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
        run.end_epoch(record, self.monitor)
        save_checkpoint(run, self.model)
        plot_history(run.history, run.run_dir / "history.png")
        log.info("epoch %d: %s", run.epoch, {k: round(v, 4) for k, v in record.items()})
        if run.wait >= run.train_config.patience:
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
