"""What the shipped photo check says of pictures it was never trained on: the bundled example photos,
scikit-image's sample pictures (``pip install scikit-image``; its ``page`` and ``text`` are pages of
text, the rest photos) and new generated pictures of every kind (seed 3; it was trained on seed 1 and
measured on seed 2 by ``python -m captioner fit-photo-check``).

    python benchmarks/photo_check.py [--model assets/model] [--generated 20]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from captioner.nonphotos import GENERATORS, generate
from captioner.pipeline import DEFAULT_EXAMPLES, DEFAULT_MODEL, Captioner
from captioner.training.photo_check import skimage_pictures


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--generated", type=int, default=20, help="new generated pictures of each kind")
    args = p.parse_args()
    captioner = Captioner.load(args.model)
    if captioner.photo_check is None:
        raise SystemExit(f"{args.model} has no photo check: python -m captioner fit-photo-check --model ...")
    rows = [(f"example {f.name}", "photo", f) for f in sorted(DEFAULT_EXAMPLES.glob("*.jpg"))]
    rows += [(f"scikit-image {name}", kind, image) for name, (kind, image) in skimage_pictures().items()]
    wrong = 0
    for name, expected, picture in rows:
        said = captioner.describe(picture)
        wrong += said.verdict.kind != expected
        print(f"{name:34s} expected {expected:7s} said {said.verdict.kind:8s} p(photo) {said.verdict.p_photo:.3f}  "
              f"{said.hedged}")
    for kind in GENERATORS:
        verdicts = [captioner.describe(im).verdict for im in generate(kind, args.generated, seed=3)]
        right = sum(v.kind == kind for v in verdicts)
        away = sum(not v.is_photo for v in verdicts)
        print(f"generated {kind:8s} (seed 3): turned away {away}/{len(verdicts)}, named right {right}/{len(verdicts)}")
    print(f"photos and samples named wrong: {wrong} of {len(rows)}")


if __name__ == "__main__":
    main()
