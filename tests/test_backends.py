"""The model is written once with keras.ops: its model, decoding and save/load tests pass under JAX too.

TensorFlow stays the default backend (the app, training, and every other test use it). This test
runs the backend-neutral tests again in a child process with ``KERAS_BACKEND=jax``. It needs the
CPU ``jax`` wheel (in requirements-dev.txt); outside CI a missing jax skips it, in CI it fails.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNDER_JAX = ["tests/test_model.py", "tests/test_decoding.py", "tests/test_pipeline.py"]


@pytest.mark.slow
def test_model_decoding_and_save_load_tests_pass_under_jax():
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        pytest.skip("already running under another backend")
    if importlib.util.find_spec("jax") is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("jax is not installed (pip install -r requirements-dev.txt)")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *UNDER_JAX], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1800)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary, summary
