"""The repository as a Hugging Face Space receives it: a plain `git push` must be accepted."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HUB_LIMIT = 10 * 10**6  # the Hub refuses files of 10 MB or more that are not in LFS or Xet


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_is_10_mb_or_larger():
    files = tracked_files()
    assert any(f.name.endswith(".weights.h5") for f in files)  # the shipped model is tracked ...
    too_big = {str(f.relative_to(ROOT)): f.stat().st_size for f in files if f.is_file() and f.stat().st_size >= HUB_LIMIT}
    assert not too_big  # ... in shards the Hub accepts


def test_no_caches_runs_or_data_sets_are_tracked():
    names = [str(f.relative_to(ROOT)) for f in tracked_files()]
    for forbidden in ("runs/", "cache/", "features/", "weights/", "flickr8k/", "__pycache__/", ".egg-info/"):
        assert not [n for n in names if forbidden in n], forbidden
    assert not [n for n in names if n.endswith((".npy", ".memmap", ".pkl", ".pickle", ".f16"))]
