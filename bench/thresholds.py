"""Default recognition threshold of an encoder, measured on ORL (40 persons x 10 real photos).

Every face (the largest one of each photo; HOG detection with the CNN detector as fallback) is
embedded and normalised to unit length; all same-person pairs and all different-person pairs are
scored by squared Euclidean distance. The default threshold is the largest one whose false accept
rate (FAR) is at most 1e-3; FAR and FRR (false reject rate) are printed there, at neighbouring
operating points and at the constant currently in ``tripletface.recognize.DEFAULT_THRESHOLDS``.

    python bench/thresholds.py [--encoder dlib-resnet] [--data ../shared/data/orl]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tripletface.data.images import person_images
from tripletface.recognize import (
    DEFAULT_THRESHOLDS,
    FaceRecognizer,
    pair_distances,
    threshold_at_far,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="dlib-resnet")
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/orl"
    )
    parser.add_argument("--far", type=float, default=1e-3)
    args = parser.parse_args()

    start = time.perf_counter()
    named = {str(p): name for name, paths in person_images(args.data).items() for p in paths}
    with tempfile.TemporaryDirectory() as tmp:
        rec = FaceRecognizer(Path(tmp) / "unused.db", args.encoder)
        embeddings, labels, missed = [], [], []
        for item in rec.embed_files(named):
            if item.error is not None or not item.boxes:
                missed.append(item.path)
                continue
            embeddings.append(item.embeddings[0])  # the largest face
            labels.append(named[item.path])
    embeddings = np.stack(embeddings)
    print(
        f"encoder {args.encoder}, data {args.data}: {len(named)} photos, {len(set(labels))} persons"
    )
    print(f"no face found in {len(missed)} photos: {', '.join(missed) or '-'}")

    result = threshold_at_far(embeddings, labels, args.far)
    print(
        f"pairs: {result.same_pairs} same-person, {result.different_pairs} different-person "
        "(squared Euclidean between unit-length embeddings)"
    )
    distances, same = pair_distances(embeddings, labels)
    print(f"{'threshold':>10} {'FAR':>10} {'FRR':>8}  operating point")
    for far in sorted({1e-2, args.far, 1e-4}, reverse=True):
        point = threshold_at_far(embeddings, labels, far)
        mark = "  <- chosen default" if far == args.far else ""
        print(f"{point.threshold:10.5f} {point.far:10.2e} {point.frr:8.2%}  FAR <= {far:g}{mark}")
    current = DEFAULT_THRESHOLDS.get(args.encoder)
    if current is not None:
        accepted = distances <= current
        print(
            f"{current:10.5f} {accepted[~same].mean():10.2e} {1 - accepted[same].mean():8.2%}  "
            "DEFAULT_THRESHOLDS in tripletface.recognize"
        )
    print(
        f"load {os.getloadavg()[0]:.2f}, torch threads {torch.get_num_threads()}, "
        f"{time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
