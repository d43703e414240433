"""Checkpoint averaging: the mean of the last few epochs' weights, kept only if dev BLEU-4 improves."""
from __future__ import annotations

import logging

import numpy as np

from ..model import CaptionModel
from .callbacks import DevScores
from .checkpoints import load_decoder_weights
from .record import Averaged, Run, checkpoint_name

log = logging.getLogger(__name__)


def average_checkpoints(model: CaptionModel, run: Run, last: int, dev: DevScores) -> None:
    """Average the weights of the last ``last`` epochs; keep the average only if dev BLEU-4 improves.

    ``model`` holds the best epoch's weights on entry; on return it holds the
    better of those and the average, and ``run.averaged`` records both scores.
    """
    epochs = list(range(run.epoch - last + 1, run.epoch + 1))
    paths = [run.run_dir / checkpoint_name(e) for e in epochs]
    if epochs[0] < 1 or not all(p.is_dir() for p in paths):
        log.info("not averaging: the last %d checkpoints are not all kept", last)
        return
    single = model.get_weights()
    stacks = []
    for p in paths:
        load_decoder_weights(model, p)
        stacks.append(model.get_weights())
    model.set_weights([np.mean(ws, axis=0) for ws in zip(*stacks)])
    dev.set_model(model)
    score = dev.score()[run.monitor.removeprefix("dev_")]
    used = score > run.best_score
    run.averaged = Averaged(epochs=epochs, dev_bleu4_greedy=score, used=used)
    if used:
        log.info("averaging epochs %s: dev BLEU-4 %.4f > %.4f: using the average", epochs, score, run.best_score)
    else:
        model.set_weights(single)
        log.info("averaging epochs %s: dev BLEU-4 %.4f <= %.4f: keeping epoch %d", epochs, score,
                 run.best_score, run.best_epoch)
