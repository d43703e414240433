"""Reading Flickr8k (either caption format) and its official split: training and evaluation only."""
from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .vocab import tokenize

log = logging.getLogger(__name__)


def read_kaggle_captions(path: Path) -> list[tuple[str, str]]:
    """``captions.txt``: a header ``image,caption`` then ``file,caption`` (split on the first comma)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().strip().lower()
        if header != "image,caption":
            raise ValueError(f"{path}: expected the header 'image,caption', found {header!r}")
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            image, sep, caption = line.partition(",")
            if sep:
                rows.append((image.strip(), caption.strip()))
    return rows


def read_token_captions(path: Path) -> list[tuple[str, str]]:
    """``Flickr8k.token.txt``: ``file#k<TAB>caption``."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            key, sep, caption = line.partition("\t")
            if sep:
                rows.append((key.rsplit("#", 1)[0].strip(), caption.strip()))
    return rows


SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "dev": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}


@dataclass
class CaptionData:
    """Photos with their tokenised captions, and which split each photo is in."""

    image_dir: Path
    captions: dict[str, list[list[str]]]  # file name -> tokenised captions
    splits: dict[str, list[str]]  # "train" / "dev" / "test" -> file names
    skipped: dict[str, int] = field(default_factory=dict)

    def split(self, name: str, max_images: int | None = None) -> list[str]:
        files = self.splits[name]
        return files[:max_images] if max_images else files

    def path(self, image: str) -> Path:
        return self.image_dir / image


def load_data(data_dir: str | Path, seed: int = 0) -> CaptionData:
    """Read a Flickr8k folder (either caption format; the official split when present).

    Captions whose photo is missing are skipped and counted, never fatal.
    """
    data_dir = Path(data_dir)
    image_dir = data_dir / "Images"
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{data_dir} has no Images/ folder; see README.md for how to get Flickr8k")
    if (data_dir / "captions.txt").is_file():
        rows = read_kaggle_captions(data_dir / "captions.txt")
    elif (data_dir / "Flickr8k.token.txt").is_file():
        rows = read_token_captions(data_dir / "Flickr8k.token.txt")
    else:
        raise FileNotFoundError(f"{data_dir} has neither captions.txt nor Flickr8k.token.txt")

    present = {p.name for p in image_dir.iterdir()}
    captions: dict[str, list[list[str]]] = {}
    skipped = Counter()
    for image, caption in rows:
        if image not in present:
            skipped["captions without a photo"] += 1
            continue
        tokens = tokenize(caption)
        if not tokens:
            skipped["empty captions"] += 1
            continue
        captions.setdefault(image, []).append(tokens)

    splits = {}
    if all((data_dir / f).is_file() for f in SPLIT_FILES.values()):
        for name, fname in SPLIT_FILES.items():
            listed = [ln.strip() for ln in (data_dir / fname).read_text().splitlines() if ln.strip()]
            splits[name] = [f for f in listed if f in captions]
            skipped[f"{name} photos without captions"] += len(listed) - len(splits[name])
        in_split = set().union(*map(set, splits.values()))
        skipped["photos in no split"] = sum(1 for f in captions if f not in in_split)
    else:  # no official split (the Kaggle download): a seeded 75/12.5/12.5 split
        files = sorted(captions)
        random.Random(seed).shuffle(files)
        n_dev = n_test = len(files) // 8
        splits = {"test": files[:n_test], "dev": files[n_test:n_test + n_dev], "train": files[n_test + n_dev:]}
    skipped = {k: v for k, v in skipped.items() if v}
    for what, count in skipped.items():
        log.info("skipped %d %s", count, what)
    return CaptionData(image_dir, captions, splits, skipped)
