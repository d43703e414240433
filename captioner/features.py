"""Encoder features, extracted once per data set into a resumable float16 memory map.

Layout of a cache folder:
    index.json     which photos, in which order, with which encoder and settings
    features.f16   float16 array (N, regions, feature_dim), memory-mapped
    progress.json  how many photos (whole batches, in order) are done

Extraction runs batch by batch in a fixed order and records progress only
after a batch's rows are flushed, so killing it and running it again carries
on where it stopped and gives the same array as an uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .config import ModelConfig
from .backend import int8_encode_function
from .encoder import (COMPUTE_DTYPES, best_compute_dtype, build_encoder, encode_function, feature_shape,
                      load_encoder_weights, weights_digest)
from .image import ImageError, load_and_preprocess

log = logging.getLogger(__name__)


CALIBRATION_PHOTOS = 32  # int8: the first photos of the list set the activation ranges


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


class FeatureCache:
    """Read access to an extracted cache: ``cache[file_name] -> (regions, D) float16``."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index = json.loads((self.directory / "index.json").read_text())
        self.files: list[str] = index["files"]
        self.meta = index
        self.row = {f: i for i, f in enumerate(self.files)}
        done = json.loads((self.directory / "progress.json").read_text())["done"]
        if done < len(self.files):
            raise RuntimeError(f"{self.directory}: extraction stopped at {done}/{len(self.files)}; run it again to finish")
        self.array = np.memmap(self.directory / "features.f16", dtype=np.float16, mode="r",
                               shape=tuple(index["shape"]))
        self.failed = set(index.get("failed", []))

    def __contains__(self, image: str) -> bool:
        return image in self.row and image not in self.failed

    def __getitem__(self, image: str) -> np.ndarray:
        return self.array[self.row[image]]

    def rows(self, images: list[str]) -> np.ndarray:
        return np.asarray(self.array[[self.row[f] for f in images]])


def feature_cache_dir(cache_root: Path, files: list[str], config: ModelConfig, encoder_weights: Path,
                      dtype: str) -> Path:
    """One cache folder per (photos, preprocessing, encoder, compute dtype)."""
    import hashlib

    weights = weights_digest(encoder_weights)
    key = json.dumps([files, config.image_size, config.pixel_mean, config.pixel_std, config.resample,
                      config.encoder_layer, weights, dtype])
    return Path(cache_root) / f"features-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def extract_features(paths: list[Path], out_dir: str | Path, config: ModelConfig, encoder_weights: str | Path,
                     batch_size: int = 32, dtype: str | None = None, progress: bool = True) -> FeatureCache:
    """Encode ``paths`` into ``out_dir`` (resuming a cache that was interrupted).

    ``dtype`` is the encoder's arithmetic: "float32", "bfloat16" (by default the faster of the two,
    as measured by :func:`captioner.encoder.best_compute_dtype`) or "int8" (see
    :func:`captioner.backend.int8_encode_function`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = dtype or best_compute_dtype(config, encoder_weights)
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be one of {COMPUTE_DTYPES}, not {dtype!r}")
    files = [Path(p).name for p in paths]
    grid, _, width = feature_shape(config)
    shape = (len(paths), grid * grid, width)  # (N, L, D)
    index = {
        "files": files,
        "shape": list(shape),
        "dtype": "float16",
        "compute_dtype": dtype,
        "batch_size": batch_size,
        "encoder_weights": str(Path(encoder_weights).name),
        "preprocessing": {k: getattr(config, k) for k in ("image_size", "pixel_mean", "pixel_std", "resample")},
        "encoder_layer": config.encoder_layer,
    }
    index_path, progress_path = out_dir / "index.json", out_dir / "progress.json"
    data_path = out_dir / "features.f16"
    done = 0
    if index_path.exists() and progress_path.exists() and data_path.exists():
        old = json.loads(index_path.read_text())
        old_failed = old.pop("failed", [])
        if old == json.loads(json.dumps(index)):  # compare as JSON: tuples come back as lists
            done = json.loads(progress_path.read_text())["done"]
            index["failed"] = old_failed
            log.info("resuming %s at %d/%d", out_dir, done, len(files))
        else:
            log.info("%s holds a different extraction; starting over", out_dir)
    if done == 0:
        _write_json_atomic(progress_path, {"done": 0})
        index["failed"] = []
        _write_json_atomic(index_path, index)
        np.memmap(data_path, dtype=np.float16, mode="w+", shape=shape).flush()
    array = np.memmap(data_path, dtype=np.float16, mode="r+", shape=shape)

    if done < len(files):
        def load(path):
            try:
                return load_and_preprocess(path, config), None
            except ImageError as exc:
                return np.zeros((config.image_size, config.image_size, 3), np.float32), f"{Path(path).name}: {exc}"

        encoder = build_encoder(config, dtype="float32" if dtype == "int8" else dtype)
        load_encoder_weights(encoder, encoder_weights)
        if dtype == "int8":  # calibrated on the first photos of the list, so a resumed run rebuilds the same model
            calibration = [x for x, err in map(load, paths[:CALIBRATION_PHOTOS]) if err is None]
            encode = int8_encode_function(encoder, calibration)
        else:
            encode = encode_function(encoder, dtype)

        bar = _progress(total=len(files), initial=done, enabled=progress)
        start, count = time.perf_counter(), 0
        with ThreadPoolExecutor(max_workers=2) as pool:
            starts = list(range(done, len(files), batch_size))
            submit = lambda s: pool.submit(lambda: [load(p) for p in paths[s:s + batch_size]])  # noqa: E731
            ahead = [submit(s) for s in starts[:2]]  # decode the next batches while this one encodes
            for i, s in enumerate(starts):
                loaded = ahead.pop(0).result()
                if i + 2 < len(starts):
                    ahead.append(submit(starts[i + 2]))
                pixels = np.stack([x for x, _ in loaded])  # (B, S, S, 3)
                for _, err in loaded:
                    if err:
                        log.warning("skipped %s", err)
                        index["failed"].append(err.split(":")[0])
                feats = np.asarray(encode(pixels), np.float32)  # (B, G, G, D)
                array[s:s + len(loaded)] = feats.reshape(len(loaded), -1, width).astype(np.float16)
                array.flush()
                if index["failed"]:
                    _write_json_atomic(index_path, index)
                _write_json_atomic(progress_path, {"done": s + len(loaded)})
                count += len(loaded)
                bar.update(len(loaded))
                bar.set_postfix(photos_per_s=f"{count / (time.perf_counter() - start):.1f}")
        bar.close()
    del array
    return FeatureCache(out_dir)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="photo", disable=not enabled, smoothing=0.1)
