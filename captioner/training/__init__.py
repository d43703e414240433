"""Training, as a lifecycle in Keras's own loop.

    batches.py      CaptionBatches: captions bucketed by length, an order set by (seed, epoch)
    record.py       Run: the run as a record (config, vocabulary, splits, history, best epoch, paths)
    checkpoints.py  one atomic folder per epoch: weights, Adam's state, seed states and the Run
    callbacks.py    DevBleu, Checkpointer (early stopping), plot_history
    averaging.py    the mean of the last epochs' weights, kept if dev BLEU-4 improves
    run.py          train(): data -> vocabulary -> features -> fit -> best epoch -> (model, Run)

:func:`captioner.export.export_run` turns the model and its :class:`Run` into a model folder.
"""
from .batches import BUCKETS, CaptionBatches, encode_captions
from .checkpoints import latest_checkpoint, restore_checkpoint, save_checkpoint
from .record import Averaged, Run
from .run import train

__all__ = ["BUCKETS", "Averaged", "CaptionBatches", "Run", "encode_captions", "latest_checkpoint",
           "restore_checkpoint", "save_checkpoint", "train"]
