"""Block5 fine-tuning: VGG16's last block trained with the decoder, between cross-entropy and SCST.

The reference run of issue 8 fine-tuned block5 jointly with the decoder for 4
epochs at a learning rate of 3e-5 after cross-entropy and before SCST (+0.8
BLEU-4 after SCST); ``finetune_decoder=False`` trains block5 alone. What it
measured here is in the README ("The shipped model").
Blocks 1-4 stay frozen, so their output is extracted once and cached
(``block4_pool``, 14 x 14 x 512 like ``block5_conv3``); each step runs block5
once per photo of the batch (:class:`PhotoBatches`) and the decoder once per
caption (:class:`~captioner.model.FinetuneModel`). The epoch is chosen on dev
CIDEr-D (greedy); the chosen block5 goes back into the whole encoder, which is
written once as ``encoder-NNN.float16.weights.h5`` in the stage's folder: the
encoder that the next stage extracts its features with and the model folder ships.

Checkpoints, exact resume, early stopping and logs are those of the other stages.
"""
from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np

from .. import backend
from ..config import ModelConfig, TrainConfig
from ..vocab import Vocabulary
from .batches import EpochBatches, bucket_widths, encode_captions
from .checkpoints import load_decoder_weights
from .record import Run

log = logging.getLogger(__name__)


class PhotoBatches(EpochBatches):
    """Batches of ``photos`` photos with all their captions, reshuffled every epoch from (seed, epoch).

    Each batch: ``{"features": (P, L, D) float16, "captions": (N, T + 1) int32, "rows": (N,) int32}``,
    ``rows[i]`` the photo (0..P-1) of caption ``i``. Captions are padded to the first length bucket
    their batch's longest fits (few shapes: few graphs); captions longer than ``max_length`` words are
    left out, and so are photos with none left. The last, partial batch of an epoch is dropped.
    """

    def __init__(self, features: np.ndarray, captions: list[list[list[int]]], photos: int, max_length: int,
                 seed: int = 0, epoch: int = 0):
        super().__init__()
        self.features, self.photos, self.seed, self.epoch = features, photos, seed, epoch
        self.captions = [[c for c in caps if len(c) - 2 <= max_length] for caps in captions]
        self.dropped = sum(len(a) - len(b) for a, b in zip(captions, self.captions))
        self.usable = np.array([i for i, caps in enumerate(self.captions) if caps], dtype=np.int64)
        self.widths = bucket_widths(max_length)
        self.plan()

    def plan(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.usable)
        self.batches = [order[s:s + self.photos] for s in range(0, len(order) - self.photos + 1, self.photos)]

    def __getitem__(self, index):
        photos = np.sort(self.batches[index])  # sorted: memmap reads in order
        captions = [(j, c) for j, p in enumerate(photos) for c in self.captions[p]]
        width = next(b for b in self.widths if max(len(c) for _, c in captions) - 2 <= b)
        caps = np.zeros((len(captions), width + 2), np.int32)  # <start> w_1 .. w_n <end> <pad> ..
        for i, (_, c) in enumerate(captions):
            caps[i, : len(c)] = c
        return {"features": np.asarray(self.features[photos]), "captions": caps,
                "rows": np.array([j for j, _ in captions], np.int32)}

    def signature(self) -> dict:
        return {"features": ((None,) + self.features.shape[1:], "float16"), "captions": ((None, None), "int32"),
                "rows": ((None,), "int32")}


def decoder_model(model, config: ModelConfig, vocab_size: int):
    """A plain :class:`~captioner.model.CaptionModel` holding ``model``'s decoder (without block5)."""
    from ..model import build_model

    plain = build_model(config, vocab_size)
    plain.decoder.set_weights(model.decoder.get_weights())
    return plain


def finetuned_encoder(run: Run, model, config: ModelConfig) -> Path:
    """The whole encoder with ``model``'s block5, as float16 weights in the run folder, written once per epoch chosen.

    Written only if absent, so that a resumed run finds the same bytes (and so the same feature cache).
    """
    from ..encoder import build_encoder, load_encoder_weights, save_encoder_weights_float16

    path = run.run_dir / f"encoder-{run.best_epoch:03d}.float16.weights.h5"
    if not path.is_file():
        encoder = build_encoder(config)
        load_encoder_weights(encoder, run.encoder_weights)
        model.block5.store_in_encoder(encoder)
        tmp = path.with_name("tmp-" + path.name)
        save_encoder_weights_float16(encoder, config, tmp)
        tmp.replace(path)
    return path


def train_finetune(data_dir: Path, run_dir: Path, config: ModelConfig, vocab: Vocabulary, start_weights: Path,
                   tcfg: TrainConfig, encoder_weights: Path, cache_root: Path, earlier: list[dict] | None = None,
                   resume: bool = False, dtype: str | None = None, progress: bool = True):
    """Fine-tune block5 with the decoder from ``start_weights`` (a decoder weights file) and ``encoder_weights``.

    Returns (model: the :class:`~captioner.model.FinetuneModel` at the best epoch, the :class:`Run`,
    the whole encoder's float16 weights file with that block5, or ``encoder_weights`` itself if no
    epoch beat the start on dev). ``run.encoder_weights`` stays the encoder the stage started
    from; its cache holds ``block4_pool`` features (:func:`run_on_encoder` gives the run as exported).
    """
    from ..encoder import feature_shape
    from ..flickr8k import load_data
    from ..model import BELOW_BLOCK5, Block5, FinetuneModel, build_decoder
    from .callbacks import DevScores
    from .run import begin_stage, fit_with_callbacks, prepare_features, resumable

    if config.encoder != "vgg16" or config.encoder_layer != "block5_conv3":
        raise ValueError(f"block5 fine-tuning needs VGG16 read at block5_conv3, not {config.encoder} "
                         f"at {config.encoder_layer}")
    keras.utils.set_random_seed(tcfg.seed)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint, saved_dtype = resumable(run_dir, resume, config, vocab, "fine-tuning")
    data = load_data(data_dir, seed=tcfg.seed)
    splits, cache, cache_dir, weights, dtype = prepare_features(data, config, tcfg, encoder_weights, cache_root,
                                                                dtype or saved_dtype, progress, layer=BELOW_BLOCK5)
    batches = PhotoBatches(cache.rows(splits["train"]),
                           [encode_captions(data.captions[f], vocab) for f in splits["train"]],
                           tcfg.finetune_photos, config.max_length, seed=tcfg.seed)
    if not len(batches):
        raise ValueError(f"{len(splits['train'])} training photos make no batch of {tcfg.finetune_photos}")
    log.info("block5 fine-tuning: %d batches of %d photos (%d captions longer than %d words left out)",
             len(batches), tcfg.finetune_photos, batches.dropped, config.max_length)

    keras.utils.set_random_seed(tcfg.seed)
    grid, _, width = feature_shape(config)
    model = FinetuneModel(build_decoder(config, len(vocab)), Block5(grid, width, name="block5"),
                          alpha_c=tcfg.alpha_c, label_smoothing=tcfg.label_smoothing, name="captioner")
    model.build()
    model.decoder.trainable = tcfg.finetune_decoder  # frozen, it still runs with dropout (training=True)
    model.compile(optimizer=keras.optimizers.Adam(tcfg.finetune_learning_rate, global_clipnorm=tcfg.clip_norm),
                  jit_compile=backend.jit_compile(tcfg.jit_compile))
    dev = DevScores(cache.rows(splits["dev"]), [data.captions[f] for f in splits["dev"]], vocab, config.max_length,
                    whole_endings=config.whole_endings, block_repeats=config.block_repeats)
    fresh = Run(config=config, train_config=tcfg, vocab=vocab, run_dir=run_dir, data_dir=Path(data_dir),
                cache_dir=cache_dir, encoder_weights=weights, compute_dtype=dtype, splits=splits,
                stage="finetune", earlier=list(earlier or []))
    run = begin_stage(model, checkpoint, fresh, lambda: load_start(model, config, len(vocab), start_weights, weights),
                      dev)
    batches.start_at(run.epoch)
    fit_with_callbacks(model, run, batches, dev, resumed=bool(checkpoint), progress=progress)
    if run.best_epoch:
        load_decoder_weights(model, run.best_checkpoint)
    else:  # no epoch beat the start on dev: the start it is, block5 as built
        load_start(model, config, len(vocab), start_weights, weights)
    log.info("best %s %.4f after fine-tuning epoch %d", run.monitor, run.best_score, run.best_epoch)
    return model, run, finetuned_encoder(run, model, config) if run.best_epoch else Path(encoder_weights)


def run_on_encoder(run: Run, config: ModelConfig, encoder_weights: Path, cache_root: Path,
                   progress: bool = True) -> Run:
    """The fine-tuning run as an export reads it: features (test included) of the whole encoder with
    the fine-tuned block5, extracted from the photos as every other stage's are."""
    import dataclasses

    from ..flickr8k import load_data
    from .run import prepare_features

    data = load_data(run.data_dir, seed=run.train_config.seed)
    splits, _, cache_dir, weights, dtype = prepare_features(data, config, run.train_config, encoder_weights,
                                                            cache_root, run.compute_dtype, progress)
    return dataclasses.replace(run, config=config, cache_dir=cache_dir, encoder_weights=weights, splits=splits,
                               compute_dtype=dtype)


def load_start(model, config: ModelConfig, vocab_size: int, decoder_weights: Path, encoder_weights: Path) -> None:
    """The decoder from a decoder weights file, block5 from the whole encoder's weights."""
    from ..encoder import build_encoder, load_encoder_weights
    from ..model import build_model

    start = build_model(config, vocab_size)
    load_decoder_weights(start, decoder_weights, file=True)
    model.decoder.set_weights(start.decoder.get_weights())
    encoder = build_encoder(config)
    load_encoder_weights(encoder, encoder_weights)
    model.block5.load_from_encoder(encoder)
