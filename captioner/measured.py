"""Choices made by measuring this machine, once, and remembered.

Which arithmetic the encoder runs (:func:`captioner.encoder.best_compute_dtype`)
and how the decoder step is compiled (:func:`captioner.decoding.best_step_compiler`)
depend on the processor in ways its flags do not tell: bfloat16 ran at twice
the float32 speed on one of this project's machines and at half of it on
another with the same flags. So each is timed on first use and the result
kept in a small JSON file under ``$XDG_CACHE_HOME/captioner/``, keyed by
:func:`machine_key` (the processor, the cores and the library versions) and
whatever else the timing depends on.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "captioner"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_key() -> str:
    """The processor model, the cores and the libraries that run the model: what a timing depends on."""
    import platform

    import keras

    processor = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    backend = keras.backend.backend()
    library = __import__(backend)  # tensorflow, jax or torch
    return " | ".join([processor, f"cores {cores()}", f"keras {keras.__version__}",
                       f"{backend} {getattr(library, '__version__', '?')}"])


def remembered(cache_file: Path, key: str, field: str, valid: Callable[[object], bool],
               measure: Callable[[], dict]) -> object:
    """``known[key][field]`` from the JSON ``cache_file`` if it is there and ``valid``; otherwise
    ``measure()`` (a dict holding ``field`` and what it was chosen from), kept there and returned.

    A file that cannot be read counts as empty; one that cannot be written (a read-only home) is
    only logged: the next process measures again.
    """
    try:
        known = json.loads(Path(cache_file).read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if isinstance(known.get(key), dict) and valid(known[key].get(field)):
        return known[key][field]
    result = measure()
    known[key] = result
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, cache_file)
    except OSError as exc:
        log.warning("could not keep the measured choice in %s: %s", cache_file, exc)
    return result[field]
