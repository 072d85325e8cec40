"""Reliability of the confidence (P(same person | distance)) on persons it was not fitted on.

celeba299 (299 persons, 6300 colour photos in the wild; CelebA, Liu et al. ICCV 2015) chips,
faces chosen by the default rule and embedded by pretrained dlib-resnet (bench/_photos.py), are
split by person with seed 0: 150 persons to fit on, the 149 others held apart. On all pairs of
each part (squared distances between unit-length embeddings), Platt scaling and isotonic
regression are fitted on the first part and measured on the held-apart persons, and on ORL (40
persons x 10 grayscale photos, another kind of photo): predicted against observed same-person
rate per bin, expected calibration error and Brier score, both classes weighing equally (the
even odds the confidence is stated at). The model printed last is the one shipped in
``tripletface.confidence.DEFAULT_MODELS``.

    python bench/confidence.py
"""

import json
import time

import numpy as np
import torch
from _photos import CELEBA_CREDIT, Memo, as_hwc, machine, photos

from tripletface import confidence
from tripletface.finetune import pretrained_encoder
from tripletface.recognize import pair_distances


def table(model, distances, same, title: str) -> float:
    """Print the reliability bins and scores of a model on pairs; return its Brier score."""
    p = model(distances)
    bins = confidence.reliability(p, same, bins=10)
    brier = confidence.brier_score(p, same)
    print(
        f"  {title}: Brier {brier:.4f} (0.25 says nothing), expected calibration error "
        f"{confidence.expected_calibration_error(bins):.4f}"
    )
    print(
        f"  {'predicted':>16} {'same pairs':>10} {'diff pairs':>10} {'mean pred':>9} "
        f"{'observed':>9}"
    )
    for b in bins:
        if b.same + b.different:
            print(
                f"  {b.low:7.1f} - {b.high:4.1f}  {b.same:10d} {b.different:10d} "
                f"{b.predicted:9.3f} {b.observed:9.3f}"
            )
    return brier


def main() -> None:
    print(machine())
    start = time.perf_counter()
    memo = Memo(pretrained_encoder("dlib-resnet"), "dlib-resnet")
    faces = photos("celeba299", embed=memo)
    order = np.random.default_rng(0).permutation(len(faces.classes))
    names = [faces.classes[i] for i in order]
    parts = {"fit": faces.persons(names[:150]), "held": faces.persons(names[150:])}
    pairs = {}
    for key, part in parts.items():
        pairs[key] = pair_distances(memo(as_hwc(part.chips)), part.labels)
    orl = photos("orl", embed=memo)
    pairs["orl"] = pair_distances(memo(as_hwc(orl.chips)), orl.labels)
    memo.save()
    d, same = pairs["fit"]
    print(
        f"celeba299 ({CELEBA_CREDIT}), split by person (seed 0): fitted on {len(parts['fit'])} "
        f"faces of 150 persons ({int(same.sum())} same-person / {int((~same).sum())} "
        f"different-person pairs); held apart {len(parts['held'])} faces of "
        f"{len(parts['held'].classes)} persons ({int(pairs['held'][1].sum())} / "
        f"{int((~pairs['held'][1]).sum())} pairs)"
    )
    scores = {}
    for method in confidence.METHODS:
        source = (
            f"bench/confidence.py: {method} on all pairs of 150 celeba299 persons (seed 0), "
            "dlib-resnet, the default face rule"
        )
        model = confidence.fit(d, same, method, source=source)
        print(f"\n{method}: {len(model.params)} parameters")
        scores[method] = table(model, *pairs["held"], "held-apart celeba299 persons")
        table(model, *pairs["orl"], "ORL (grayscale, another camera)")
        if method == "platt":
            a, b = model.params
            print(
                f"  50% at distance {-b / a:.4f}, 90% at {(-np.log(9) - b) / a:.4f}, "
                f"10% at {(np.log(9) - b) / a:.4f}"
            )
    best = min(scores, key=scores.get)
    shipped = confidence.fit(
        d,
        same,
        "platt",
        source=(
            "bench/confidence.py: Platt scaling on all pairs of 150 celeba299 persons (seed 0), "
            "dlib-resnet, the default face rule"
        ),
    )
    print(f"\nlower Brier on held-apart persons: {best}; shipped (platt, 2 numbers):")
    print(json.dumps(shipped.to_dict()))
    print(f"{machine()}, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
