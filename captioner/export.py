"""Turning a finished training run into a model folder with scores and a model card."""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from .config import ModelConfig
from .evaluate import calibrate_hedging, decode_all, evaluate_folder, format_table

log = logging.getLogger(__name__)


def export_run(model, vocab, config: ModelConfig, state: dict, train_config: dict, encoder_weights: Path,
               dev_features, dev_references, out_dir: Path, data_dir: Path, cache_root: Path,
               beam_sizes=(1, 3, 5), coco: bool = False, command: str = "", dtype: str | None = None) -> dict:
    """Write ``out_dir`` (weights, config with calibrated hedging, metrics, card) and score it on test."""
    from .encoder import build_encoder, load_encoder_weights
    from .encoder import best_compute_dtype
    from .pipeline import Captioner, save_folder

    encoder = build_encoder(config)
    load_encoder_weights(encoder, encoder_weights)
    save_folder(out_dir, config, vocab, encoder, model)  # weights first, so the folder's own encoder is used
    captioner = Captioner.load(out_dir, compute_dtype=None if dtype == "int8" else dtype)  # int8: extraction only
    dev_caps = decode_all(captioner, dev_features, config.beam_size)
    hedging = calibrate_hedging(dev_caps, dev_references)
    config = dataclasses.replace(config, hedge_sure=round(hedging["hedge_sure"], 4),
                                 hedge_possible=round(hedging["hedge_possible"], 4))
    config.save(out_dir / "config.json")
    start = time.perf_counter()
    table = evaluate_folder(out_dir, data_dir, "test", beam_sizes, cache_root, coco=coco,
                            max_images=train_config.get("max_images"))
    log.info("test split:\n%s", format_table(table))
    metrics = {
        "test": {str(k): v for k, v in table.items()},
        "dev_hedging": hedging,
        "shipped_beam_size": config.beam_size,
        "best_epoch": state.get("best_epoch"),
        "best_dev_bleu4_greedy": state.get("best"),
        "epochs_run": state.get("epoch"),
        "checkpoint_average": state.get("averaged"),
        "train_seconds": sum(h.get("train_seconds", 0.0) for h in state["history"]),
        "history": state["history"],
        "evaluation": "nltk corpus_bleu, all references per photo, captioner.vocab.tokenize; "
                      "reproduce: python -m captioner evaluate --model <this folder> --data-dir <flickr8k> --split test",
        "command": command,
        "training_features_dtype": dtype or best_compute_dtype(),  # the encoder's arithmetic in extraction
        "test_seconds": time.perf_counter() - start,
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out_dir / "train_config.json").write_text(json.dumps(train_config, indent=2) + "\n")
    (out_dir / "README.md").write_text(model_card(config, metrics, table, len(vocab)))
    return metrics


def model_card(config: ModelConfig, metrics: dict, table: dict, vocab_size: int) -> str:
    from .encoder import feature_shape

    h = metrics["dev_hedging"]
    grid, _, width = feature_shape(config)
    return f"""# Show, Attend and Tell captioner: model card

**What it does.** Describes a photo in one English sentence and shows which
part of the photo each word came from (soft attention over a 14 x 14 grid).

**Architecture.** VGG16 up to `{config.encoder_layer}` (frozen, {grid * grid} regions of
{width} features) and an LSTM decoder with soft attention, the gating scalar
beta and a deep output layer (Xu et al., 2015): embedding {config.embed_dim}, LSTM
{config.lstm_units}, attention {config.attention_dim}, dropout {config.dropout}, vocabulary
{vocab_size} words. Everything is in `config.json`.

**Encoder weights.** {config.encoder_weights}: torchvision's VGG16 IMAGENET1K_V1
convolutional weights (BSD-3-Clause, from torchvision; trained on ImageNet), stored
here as float16. Photos are resized whole to {config.image_size} x {config.image_size} (no crop) and
standardised with ImageNet's mean {config.pixel_mean} and std {config.pixel_std}.
The training features were extracted with {metrics['training_features_dtype']} arithmetic.

**Training data.** Flickr8k (Hodosh, Young & Hockenmaier, 2013), official split:
6,000 training photos x 5 captions; the dev split chose the epoch and the
hedging thresholds; the test split was scored once. Best dev BLEU-4 (greedy)
{metrics['best_dev_bleu4_greedy']:.4f} after epoch {metrics['best_epoch']}; training took
{metrics['train_seconds'] / 60:.0f} minutes on 2 CPU cores.

**Test scores** (nltk `corpus_bleu` against all five references, in %):

{format_table(table)}

The app decodes with beam width {config.beam_size} and length penalty {config.length_penalty}.

**Hedged wording.** The mean log-probability per word decides the wording:
"Probably ..." at or above {config.hedge_sure:.3f}, "Possibly ..." at or above
{config.hedge_possible:.3f}, otherwise "I'm not sure; it may be ...". On dev, BLEU-1 of
each band: probably {100 * h.get('probably_bleu1', 0):.1f}, possibly {100 * h.get('possibly_bleu1', 0):.1f},
not sure {100 * h.get('not_sure_bleu1', 0):.1f}.

**Intended use.** Alt text drafts and a teaching tool for attention. Not for
decisions about people: it was trained on 6,000 Flickr photos, mostly of
people, dogs and outdoor scenes in the USA, and it inherits their biases
(for example, guessing gender from appearance). It often gets counts,
colours and small objects wrong, and it has never seen text, screenshots,
documents or medical images. It cannot read text in photos.

**Files.** `config.json`, `vocab.json`, `encoder.weights.json` and `decoder.weights.json`
(Keras 3 weights, each a manifest of shards under 10 MB), `metrics.json` (all scores and the per-epoch history),
`train_config.json`. No pickles.
"""
