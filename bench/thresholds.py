"""Default recognition threshold of an encoder, chosen on celeba299 colour photos in the wild.

The faces of every photo of celeba299 (299 persons, 6300 colour photos; CelebA, Liu et al. ICCV
2015) and of ORL (40 persons x 10 grayscale photos) are detected once and cached (bench/_photos.py;
of a photo with several faces, the one most similar to the person's other photos, the default
rule), embedded and normalised to unit length; all same-person and all different-person pairs
are scored by squared Euclidean distance. The default threshold is the largest one whose
false accept rate (FAR) on celeba299's pairs is at most 1e-3; FAR and FRR (false reject rate)
are printed there, at neighbouring operating points and at the constant in
``tripletface.recognize.DEFAULT_THRESHOLDS``, on both data sets. Only pretrained encoders
(dlib-resnet) take these chips.

    python bench/thresholds.py [--far 1e-3]
"""

import argparse
import time

import torch
from _photos import CELEBA_CREDIT, Memo, as_hwc, machine, photos

from tripletface.finetune import pretrained_encoder
from tripletface.recognize import DEFAULT_THRESHOLDS, pair_distances, threshold_at_far


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="dlib-resnet")
    parser.add_argument("--far", type=float, default=1e-3)
    args = parser.parse_args()
    print(machine())
    start = time.perf_counter()
    memo = Memo(pretrained_encoder(args.encoder), args.encoder)
    chosen = None
    for name in ("celeba299", "orl"):
        faces = photos(name, embed=memo)
        embeddings = memo(as_hwc(faces.chips))
        result = threshold_at_far(embeddings, faces.labels, args.far)
        print(
            f"{name}" + (f" ({CELEBA_CREDIT})" if name == "celeba299" else "") + f": "
            f"{len(faces)} faces of {len(faces.classes)} persons; all pairs: "
            f"{result.same_pairs} same-person, {result.different_pairs} different-person "
            "(squared Euclidean between unit-length embeddings)"
        )
        distances, same = pair_distances(embeddings, faces.labels)
        print(f"{'threshold':>10} {'FAR':>10} {'FRR':>8}  operating point")
        fars = (1e-2, args.far, 1e-4)
        points = [threshold_at_far(embeddings, faces.labels, far).threshold for far in fars]
        if chosen is None:
            chosen = points[1]
        current = DEFAULT_THRESHOLDS.get(args.encoder)
        rows = [(p, f"FAR <= {far:g} on {name}") for p, far in zip(points, fars, strict=True)]
        if name != "celeba299":
            rows.append((chosen, "the threshold chosen on celeba299"))
        if current is not None:
            rows.append((current, "DEFAULT_THRESHOLDS in tripletface.recognize"))
        rows.append((0.1339, "the former default (FAR <= 1e-3 on ORL)"))
        for threshold, label in rows:
            accepted = distances <= threshold
            mark = "  <- chosen default" if name == "celeba299" and threshold == chosen else ""
            print(
                f"{threshold:10.5f} {accepted[~same].mean():10.2e} "
                f"{1 - accepted[same].mean():8.2%}  {label}{mark}"
            )
    memo.save()
    print(f"{machine()}, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
