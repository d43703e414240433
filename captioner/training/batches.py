"""Training batches: captions grouped by length, padded only to their bucket, in an order set by (seed, epoch)."""
from __future__ import annotations

import keras
import numpy as np

from ..vocab import Vocabulary

BUCKETS = (10, 13, 16)  # word counts; a caption is padded to the first bucket it fits, else max_length


def encode_captions(captions: list[list[str]], vocab: Vocabulary) -> list[list[int]]:
    """Token lists -> ``[<start>, w_1, ..., w_n, <end>]`` id lists."""
    return [[vocab.start_id] + vocab.encode(c) + [vocab.end_id] for c in captions]


def bucket_widths(max_length: int) -> list[int]:
    """The word counts batches are padded to: the buckets below ``max_length``, and ``max_length`` itself."""
    return sorted({b for b in BUCKETS if b < max_length} | {max_length})


class EpochBatches(keras.utils.PyDataset):
    """Batches planned anew for every epoch from (seed, epoch) alone, so a resumed run sees what an
    uninterrupted one would have. Subclasses set ``self.epoch`` and define :meth:`plan` (this epoch's
    ``self.batches``), ``__getitem__`` and :meth:`signature`."""

    prefetch = 2  # batches tf.data prepares ahead

    def plan(self):
        raise NotImplementedError

    def signature(self) -> dict:
        """Each key of a batch -> (shape, dtype), None where the size changes from batch to batch."""
        raise NotImplementedError

    def start_at(self, epoch: int) -> None:
        """Plan the batches of ``epoch`` (0-based), as an uninterrupted run would have reached it."""
        self.epoch = epoch
        self.plan()

    def __len__(self):
        return len(self.batches)

    def on_epoch_end(self):
        self.epoch += 1
        self.plan()

    def dataset(self):
        """What ``fit`` takes: one pass is one epoch, and the next pass reshuffles.

        Under TensorFlow a tf.data pipeline over :meth:`signature`; under other backends this
        PyDataset itself (Keras calls :meth:`on_epoch_end` after each epoch).
        """
        from .. import backend

        def one_epoch():
            for i in range(len(self)):
                yield self[i]
            self.on_epoch_end()

        if backend.name() != "tensorflow":
            return self  # a keras.utils.PyDataset
        return backend.tf_dataset(one_epoch, self.signature(), length=len(self), prefetch=self.prefetch)


class CaptionBatches(EpochBatches):
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
        bounds = bucket_widths(max_length)
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
        """This epoch's batches: ``[(bucket, caption indices), ...]``, from (seed, epoch) alone."""
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

    def __getitem__(self, index):
        bucket, members = self.batches[index]
        caps = np.zeros((len(members), bucket + 2), np.int32)  # <start> w_1 .. w_n <end> <pad> ..
        for j, i in enumerate(members):
            caps[j, : len(self.captions[i])] = self.captions[i]
        return {"features": self.features[self.rows[members]], "captions": caps}

    def signature(self) -> dict:
        """``{"features": (B, L, D) float16, "captions": (B, T + 1) int32}``; the caption length left open."""
        return {"features": ((None,) + self.features.shape[1:], "float16"), "captions": ((None, None), "int32")}
