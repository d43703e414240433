"""The whole run: data, vocabulary, features, model, ``fit`` with callbacks, best epoch, averaging."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path

import keras
import numpy as np

from .. import backend
from ..config import ModelConfig, TrainConfig
from ..model import CaptionModel
from ..vocab import Vocabulary
from .averaging import average_checkpoints
from .batches import CaptionBatches, encode_captions
from .callbacks import Checkpointer, DevScores
from .checkpoints import STATE, latest_checkpoint, load_decoder_weights, restore_checkpoint
from .record import Run

log = logging.getLogger(__name__)


def folder_encoder_weights(encoder_weights: Path, config: ModelConfig, cache_root: Path) -> Path:
    """The encoder weights rounded to float16, as a model folder stores them, written once under ``cache_root``.

    Features are extracted with these, so the decoder trains on, and the test
    split is scored with, exactly the encoder that the model folder ships.
    """
    from ..encoder import build_encoder, load_encoder_weights, save_encoder_weights_float16, weights_digest

    digest = hashlib.sha256(f"{weights_digest(encoder_weights)} {config.encoder_layer}".encode()).hexdigest()
    path = Path(cache_root) / "encoders" / f"{digest[:12]}.float16.weights.h5"
    if not path.is_file():
        encoder = build_encoder(config)
        load_encoder_weights(encoder, encoder_weights)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("tmp-" + path.name)
        save_encoder_weights_float16(encoder, config, tmp)
        tmp.replace(path)
    return path


def prepare_features(data, config: ModelConfig, tcfg: TrainConfig, encoder_weights: Path, cache_root: Path,
                     dtype: str | None, progress: bool = True, layer: str | None = None):
    """The three splits' photos and their features, extracted once and cached, with the encoder as the
    model folder stores it. Returns (splits, cache, cache_dir, float16 encoder weights, dtype).

    ``layer`` reads the encoder at an earlier layer than ``config.encoder_layer`` (block5
    fine-tuning caches ``block4_pool``); the weights file is the whole encoder's either way.
    """
    from ..encoder import best_compute_dtype
    from ..features import extract_features, feature_cache_dir

    splits = {name: data.split(name, tcfg.max_images) for name in ("train", "dev", "test")}
    if tcfg.eval_images:
        splits["dev"] = splits["dev"][: tcfg.eval_images]
    weights = folder_encoder_weights(encoder_weights, config, cache_root)
    dtype = dtype or best_compute_dtype(config, weights)
    files = list(dict.fromkeys(splits["train"] + splits["dev"] + splits["test"]))
    read_at = dataclasses.replace(config, encoder_layer=layer) if layer else config
    cache_dir = feature_cache_dir(cache_root, files, read_at, weights, dtype)
    start = time.perf_counter()
    cache = extract_features([data.path(f) for f in files], cache_dir, read_at, weights, dtype=dtype,
                             progress=progress)
    log.info("features ready in %s (%.0f s)", cache_dir, time.perf_counter() - start)
    splits = {name: [f for f in split if f in cache] for name, split in splits.items()}
    return splits, cache, cache_dir, weights, dtype


def folder_features(folder: Path, data_dir: Path, cache_root: Path, progress: bool = False):
    """A model folder's :class:`~captioner.pipeline.Captioner` (float32; its encoder is not run) and the
    features train.py cached for it: the folder's own encoder, in the arithmetic its decoder was trained
    on (extracted there first if missing). For choosing decoding settings on dev and the benchmarks.
    Returns (captioner, data, splits, cache, cache_dir, dtype)."""
    import json

    from ..flickr8k import load_data
    from ..pipeline import Captioner, encoder_path

    captioner = Captioner.load(folder, compute_dtype="float32")
    metrics_file = Path(folder) / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    dtype = metrics.get("training_features_dtype") or "bfloat16"
    data = load_data(data_dir, seed=TrainConfig().seed)
    splits, cache, cache_dir, _, _ = prepare_features(data, captioner.config, TrainConfig(), encoder_path(folder),
                                                      cache_root, dtype, progress=progress)
    return captioner, data, splits, cache, cache_dir, dtype


def train(data_dir: Path, run_dir: Path, config: ModelConfig, tcfg: TrainConfig, encoder_weights: Path,
          cache_root: Path, resume: bool = False, dtype: str | None = None,
          progress: bool = True) -> tuple[CaptionModel, Run]:
    """Train a decoder on cached features; return the model (best epoch, or the average) and the :class:`Run`.

    With ``resume``, training continues from ``run_dir``'s latest checkpoint
    (weights, Adam's state and the record); the architecture recorded there
    must match ``config``. ``dtype`` is the encoder's arithmetic in feature
    extraction (default: the resumed run's, else the processor's best).
    """
    from ..flickr8k import load_data
    from ..model import build_model

    keras.utils.set_random_seed(tcfg.seed)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(data_dir, seed=tcfg.seed)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if checkpoint:
        saved = Run.load(checkpoint / STATE)
        if saved.config.architecture() != config.architecture():
            raise ValueError(f"--resume: {run_dir} holds a different architecture {saved.config.architecture()} "
                             f"than asked for {config.architecture()}")
        vocab, dtype = saved.vocab, dtype or saved.compute_dtype
    else:
        if resume:
            log.info("nothing to resume in %s: starting afresh", run_dir)
        train_files = data.split("train", tcfg.max_images)
        vocab = Vocabulary.build([c for f in train_files for c in data.captions[f]], tcfg.min_word_count)
    log.info("vocabulary: %d words (min count %d)", len(vocab), tcfg.min_word_count)
    splits, cache, cache_dir, weights, dtype = prepare_features(data, config, tcfg, encoder_weights, cache_root,
                                                                dtype, progress)

    rows, caps = [], []  # caption i belongs to photo rows[i] of the training features
    for i, f in enumerate(splits["train"]):
        for c in encode_captions(data.captions[f], vocab):
            rows.append(i)
            caps.append(c)
    batches = CaptionBatches(cache.rows(splits["train"]), np.array(rows), caps, tcfg.batch_size,
                             config.max_length, seed=tcfg.seed)
    if not len(batches):
        raise ValueError(f"{len(caps)} training captions make no full batch of {tcfg.batch_size}: "
                         "lower the batch size or use more photos")
    log.info("%d training captions in %d batches (%d longer than %d words left out)",
             len(caps), len(batches), batches.dropped, config.max_length)

    # Seeded again here: extraction may or may not have built (and randomly initialised) an encoder,
    # and the decoder's initial weights must not depend on whether the cache already existed.
    keras.utils.set_random_seed(tcfg.seed)
    model = build_model(config, len(vocab), tcfg.alpha_c, tcfg.label_smoothing)
    schedule = keras.optimizers.schedules.ExponentialDecay(  # decays once per epoch
        tcfg.learning_rate, decay_steps=max(1, len(batches)), decay_rate=tcfg.lr_decay, staircase=True)
    model.compile(optimizer=keras.optimizers.Adam(schedule, global_clipnorm=tcfg.clip_norm),
                  jit_compile=backend.jit_compile(tcfg.jit_compile))
    if checkpoint:
        run = restore_checkpoint(checkpoint, model)
        run.train_config = tcfg  # this invocation's settings (for example more epochs) from here on
        log.info("resumed from %s after epoch %d", checkpoint, run.epoch)
    else:
        run = Run(config=config, train_config=tcfg, vocab=vocab, run_dir=run_dir, data_dir=Path(data_dir),
                  cache_dir=cache_dir, encoder_weights=weights, compute_dtype=dtype, splits=splits)
    run.run_dir, run.data_dir, run.cache_dir, run.encoder_weights = run_dir, Path(data_dir), cache_dir, weights
    run.compute_dtype, run.splits = dtype, splits
    vocab.save(run_dir / "vocab.json")
    config.save(run_dir / "config.json")
    (run_dir / "train_config.json").write_text(tcfg.to_json() + "\n")
    batches.start_at(run.epoch)

    dev = DevScores(cache.rows(splits["dev"]), [data.captions[f] for f in splits["dev"]], vocab, config.max_length,
                    whole_endings=config.whole_endings, block_repeats=config.block_repeats)
    fit_with_callbacks(model, run, batches, dev, resumed=bool(checkpoint), progress=progress)
    load_decoder_weights(model, run.best_checkpoint)
    log.info("best %s %.4f after epoch %d", run.monitor, run.best_score, run.best_epoch)
    if tcfg.average_last > 1:
        average_checkpoints(model, run, tcfg.average_last, dev)
    return model, run


def resumable(run_dir: Path, resume: bool, config: ModelConfig, vocab: Vocabulary, what: str):
    """(checkpoint, its features' dtype) to resume a later stage from, or (None, None); refused if
    ``run_dir`` holds a run of another model. ``what`` names the stage in the message."""
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if not checkpoint:
        return None, None
    saved = Run.load(checkpoint / STATE)
    if saved.config.architecture() != config.architecture() or saved.vocab.words != vocab.words:
        raise ValueError(f"--resume: {run_dir} holds a {what} run of another model "
                         f"({saved.config.architecture()}, {len(saved.vocab)} words)")
    return checkpoint, saved.compute_dtype


def begin_stage(model, checkpoint: Path | None, fresh: Run, start, dev) -> Run:
    """A later stage's :class:`Run`: restored from ``checkpoint`` into the compiled ``model``, or else
    ``fresh`` after ``start()`` has loaded the starting weights, with that start scored on dev as
    "epoch 0" of the record (an epoch must beat it to be chosen). Where the data and features lie,
    and the settings, are ``fresh``'s (this invocation's) either way."""
    if checkpoint:
        run = restore_checkpoint(checkpoint, model)
        log.info("resumed %s from %s after epoch %d", fresh.stage, checkpoint, run.epoch)
    else:
        start()
        run = fresh
        dev.set_model(model)
        scores = {f"dev_{k}": v for k, v in dev.score().items()}
        log.info("%s starts from %s", fresh.stage, {k: round(v, 4) for k, v in scores.items()})
        run.best_score = scores[run.monitor]
        run.earlier.append({"stage": "start", "dev": scores})
    for key in ("train_config", "run_dir", "data_dir", "cache_dir", "encoder_weights", "compute_dtype", "splits"):
        setattr(run, key, getattr(fresh, key))
    return run


def fit_with_callbacks(model, run: Run, batches, dev, resumed: bool, progress: bool = True) -> None:
    """``fit`` from ``run.epoch`` to the planned epochs, with dev scores, checkpoints, CSV and TensorBoard logs."""
    callbacks = [dev, Checkpointer(run),
                 keras.callbacks.CSVLogger(str(run.run_dir / "history.csv"), append=resumed)]
    try:
        import tensorboard  # noqa: F401

        callbacks.append(keras.callbacks.TensorBoard(str(run.run_dir / "tensorboard"), write_graph=False))
    except ImportError:
        log.info("tensorboard is not installed: no TensorBoard logs")
    if not run.finished():
        # shuffle=False: the batches order each epoch from (seed, epoch) themselves; Keras's own shuffling
        # of a PyDataset (other backends) would draw from numpy's global state, which a resumed run lacks.
        model.fit(batches.dataset(), epochs=run.planned_epochs, initial_epoch=run.epoch, callbacks=callbacks,
                  shuffle=False, verbose=1 if progress else 2)
