"""Checkpoints: one folder per finished epoch, written atomically, and the pointer to the latest.

    checkpoint-007/decoder.weights.h5   the model's weights (no optimizer inside)
    checkpoint-007/optimizer.npz        Adam's variables in order: iteration counter, then moments
    checkpoint-007/seeds.npz            the dropout layers' random-seed states
    checkpoint-007/state.json           the :class:`~captioner.training.record.Run` record
    latest.json                         {"checkpoint": "checkpoint-007"}

Restoring all four gives back the run exactly: with the same seed, the
weights after the next epoch equal those of a run that was never stopped.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from ..model import CaptionModel, save_model_weights
from .record import Run, checkpoint_name

WEIGHTS, OPTIMIZER, SEEDS, STATE = "decoder.weights.h5", "optimizer.npz", "seeds.npz", "state.json"


def seed_variables(model: CaptionModel) -> list:
    """The variables that are neither weights nor optimizer state: the dropout seed generators' states."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def save_checkpoint(run: Run, model: CaptionModel) -> Path:
    """Write weights, optimizer and seed states and the run record to a new folder, then point ``latest`` at it.

    A kill, or a full disk, at any moment leaves either the previous checkpoint
    or the new one in force, never a half-written one. Keeps the newest
    ``average_last`` checkpoints (for averaging) and the best one.
    """
    run_dir = run.run_dir
    final = run_dir / checkpoint_name(run.epoch)
    tmp = run_dir / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        save_model_weights(model, tmp / WEIGHTS)
        np.savez(tmp / OPTIMIZER, *[np.asarray(v) for v in model.optimizer.variables])
        np.savez(tmp / SEEDS, *[np.asarray(v) for v in seed_variables(model)])
        (tmp / STATE).write_text(run.to_json())
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(exc.errno, f"could not write {final} ({exc.strerror or exc}); "
                                 f"the previous checkpoint {latest_checkpoint(run_dir)} is still in force") from exc
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer = run_dir / "latest.json.tmp"
    pointer.write_text(json.dumps({"checkpoint": final.name}))
    os.replace(pointer, run_dir / "latest.json")
    keep = {checkpoint_name(e) for e in range(run.epoch - run.train_config.average_last + 1, run.epoch + 1)}
    keep.add(run.best_checkpoint.name)
    for old in run_dir.glob("checkpoint-*"):
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "latest.json"
    if not pointer.exists():
        return None
    path = Path(run_dir) / json.loads(pointer.read_text())["checkpoint"]
    return path if path.is_dir() else None


def _assign_all(variables, path: Path, what: str) -> None:
    with np.load(path, allow_pickle=False) as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(values) != len(variables) or any(tuple(v.shape) != a.shape for v, a in zip(variables, values)):
        raise ValueError(f"{path}: the saved {what} ({len(values)} arrays) does not fit this model "
                         f"({len(variables)} variables)")
    for variable, value in zip(variables, values):
        variable.assign(value)


def restore_checkpoint(path: Path, model: CaptionModel) -> Run:
    """Load a checkpoint into a compiled ``model`` (weights, Adam's state, seed states); return its record."""
    path = Path(path)
    run = Run.load(path / STATE)
    load_decoder_weights(model, path)
    model.optimizer.build(model.trainable_variables)  # creates Adam's variables, which a fresh model lacks
    _assign_all(model.optimizer.variables, path / OPTIMIZER, "optimizer state")
    _assign_all(seed_variables(model), path / SEEDS, "random-seed state")
    return run


def load_decoder_weights(model: CaptionModel, checkpoint: Path, file: bool = False) -> None:
    """The weights alone (for the best epoch or averaging); the optimizer is left as it is.

    ``checkpoint`` is a checkpoint folder, or with ``file`` a weights file itself (a model folder's
    ``decoder.weights.json``)."""
    with warnings.catch_warnings():
        # The file holds no optimizer on purpose (Adam's state is in optimizer.npz, restored by
        # restore_checkpoint), which Keras reports for a compiled model as "Skipping variable loading".
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(Path(checkpoint) if file else Path(checkpoint) / WEIGHTS)
