"""The run as a record: everything a training run knows, saved as a checkpoint's ``state.json``.

A checkpoint folder holds the decoder's weights, Adam's state and this record,
so it alone continues the run (``--resume``) or exports it (:mod:`captioner.export`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import ModelConfig, TrainConfig
from ..vocab import Vocabulary

RECORD_VERSION = 1
STAGES = {"xe": "dev_bleu4", "finetune": "dev_cider", "scst": "dev_cider"}  # each training stage and the dev score that picks its epoch


@dataclass
class Averaged:
    """The average of the last few epochs' weights, and whether it beat the best single epoch on dev."""

    epochs: list[int]
    dev_bleu4_greedy: float
    used: bool


@dataclass
class Run:
    # --- what was trained
    config: ModelConfig
    train_config: TrainConfig
    vocab: Vocabulary
    # --- where: the run folder (checkpoints, logs), the data, and the feature cache the decoder saw
    run_dir: Path
    data_dir: Path
    cache_dir: Path  # one FeatureCache folder holding every photo of the three splits
    encoder_weights: Path  # the encoder the features came from (float16 values, as a model folder stores them)
    compute_dtype: str  # the encoder's arithmetic in extraction: "float32", "bfloat16" or "int8"
    splits: dict[str, list[str]]  # photo file names of "train", "dev" (scored each epoch) and "test"
    # --- how far it got
    epoch: int = 0  # finished epochs
    history: list[dict] = field(default_factory=list)  # one dict of logs per finished epoch
    best_epoch: int = 0
    best_score: float = float("-inf")  # dev BLEU-4 (greedy) of best_epoch
    wait: int = 0  # epochs since best_epoch, for early stopping
    averaged: Averaged | None = None
    # --- which stage: "xe" (cross-entropy), "finetune" (cross-entropy with VGG16's block5 trained too)
    # or "scst" (self-critical), each after the first from an earlier stage's weights,
    # and what came before: a summary (stage, epochs, seconds, best epoch, history) of each earlier stage
    stage: str = "xe"
    earlier: list[dict] = field(default_factory=list)

    @property
    def monitor(self) -> str:
        """The dev score (greedy decoding) that picks the best epoch and stops early."""
        return STAGES[self.stage]

    @property
    def planned_epochs(self) -> int:
        return {"scst": self.train_config.scst_epochs, "finetune": self.train_config.finetune_block5}.get(
            self.stage, self.train_config.epochs)

    def summary(self) -> dict:
        """This stage in brief, for the next stage's ``earlier`` and for metrics.json."""
        return {"stage": self.stage, "epochs": self.epoch, "train_seconds": self.train_seconds,
                "best_epoch": self.best_epoch, "monitor": self.monitor, "best_score": self.best_score,
                "history": self.history}

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / checkpoint_name(self.best_epoch)

    @property
    def train_seconds(self) -> float:
        return sum(h.get("train_seconds", 0.0) for h in self.history)

    def features(self, split: str) -> np.ndarray:
        """(N, L, D) float16 features of a split's photos, read from the run's feature cache."""
        from ..features import FeatureCache

        return FeatureCache(self.cache_dir).rows(self.splits[split])

    def references(self, split: str) -> list[list[list[str]]]:
        """The tokenised reference captions of a split's photos, in the order of :meth:`features`."""
        from ..flickr8k import load_data

        data = load_data(self.data_dir, seed=self.train_config.seed)
        return [data.captions[f] for f in self.splits[split]]

    def finished(self) -> bool:
        return self.epoch >= self.planned_epochs or self.wait >= self.train_config.patience

    def end_epoch(self, logs: dict) -> bool:
        """Record a finished epoch's logs; True when it is the best so far on :attr:`monitor`."""
        self.epoch = int(logs["epoch"])
        self.history.append(logs)
        value = logs.get(self.monitor, float("-inf"))
        if value > self.best_score:
            self.best_epoch, self.best_score, self.wait = self.epoch, float(value), 0
            return True
        self.wait += 1
        return False

    # --- as JSON (state.json)
    def to_dict(self) -> dict:
        return {
            "version": RECORD_VERSION,
            "config": dataclasses.asdict(self.config),
            "train_config": dataclasses.asdict(self.train_config),
            "vocab": self.vocab.words,
            **{k: str(getattr(self, k)) for k in ("run_dir", "data_dir", "cache_dir", "encoder_weights")},
            "compute_dtype": self.compute_dtype,
            "splits": self.splits,
            "epoch": self.epoch,
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_score": self.best_score if math.isfinite(self.best_score) else None,  # a later stage's start too
            "wait": self.wait,
            "averaged": dataclasses.asdict(self.averaged) if self.averaged else None,
            "stage": self.stage,
            "earlier": self.earlier,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict) -> "Run":
        if data.get("version") != RECORD_VERSION:
            raise ValueError(f"state.json of record version {data.get('version')}, this code reads {RECORD_VERSION}: "
                             "the run was written by another version; start it afresh")
        return cls(
            config=ModelConfig.from_dict(data["config"]),
            train_config=TrainConfig(**data["train_config"]),
            vocab=Vocabulary(data["vocab"]),
            **{k: Path(data[k]) for k in ("run_dir", "data_dir", "cache_dir", "encoder_weights")},
            compute_dtype=data["compute_dtype"],
            splits=data["splits"],
            epoch=data["epoch"],
            history=data["history"],
            best_epoch=data["best_epoch"],
            best_score=float("-inf") if data["best_score"] is None else data["best_score"],
            wait=data["wait"],
            averaged=Averaged(**data["averaged"]) if data["averaged"] else None,
            stage=data.get("stage", "xe"),
            earlier=data.get("earlier", []),
        )

    @classmethod
    def load(cls, path: str | Path) -> "Run":
        return cls.from_dict(json.loads(Path(path).read_text()))


def checkpoint_name(epoch: int) -> str:
    return f"checkpoint-{epoch:03d}"


def stage_settings(last_stage: str, train_config: dict) -> dict:
    """What a stage's record keeps of its run's settings, for the model card: block5 with or without the
    decoder; SCST's reward counting the end of a caption or not."""
    if last_stage == "finetune":
        return {"decoder": "trained" if train_config.get("finetune_decoder", True) else "frozen"}
    if last_stage == "scst":
        return {"reward_end": bool(train_config.get("scst_reward_end", False))}
    return {}
