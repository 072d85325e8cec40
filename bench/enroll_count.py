"""How many photos to enroll per person, and how to use several: nearest face or mean template.

celeba299 (CelebA, Liu et al. ICCV 2015) chips, faces chosen by the default rule, embedded by
pretrained dlib-resnet (bench/_photos.py). Persons with at least 6 photos are shuffled (seed 0);
a fifth of them are strangers, never enrolled. Each enrolled person's photos are shuffled (seed
0): the first 1, 2, 3 or 5 are enrolled, every photo after the fifth is a probe (the same probes
for every count). Each probe is identified at the default threshold of ``tripletface.recognize``
(the nearest person; "unknown" beyond it): rank-1 (closed set), FRR (a genuine probe called
unknown), wrong-name rate (a genuine probe given another's name) and stranger accepted (a
stranger's probe given any name). Person distance: the nearest enrolled face (what the gallery
does) or the distance to the person's mean template (the normalised mean of their embeddings).

    python bench/enroll_count.py [--threshold T]
"""

import argparse
import time

import numpy as np
import torch
from _photos import CELEBA_CREDIT, Memo, as_hwc, machine, photos

from tripletface.finetune import pretrained_encoder
from tripletface.recognize import DEFAULT_THRESHOLDS

COUNTS = (1, 2, 3, 5)


def person_distances(probes, enrolled, owners, persons, rule):
    """P x persons squared distances of probe rows to each person's enrolled rows."""
    squared = 2 - 2 * probes @ enrolled.T
    out = np.empty((len(probes), len(persons)))
    for k, person in enumerate(persons):
        mine = owners == person
        if rule == "nearest face":
            out[:, k] = squared[:, mine].min(axis=1)
        else:
            template = enrolled[mine].mean(axis=0)
            template /= np.linalg.norm(template)
            out[:, k] = 2 - 2 * probes @ template
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, help="instead of the default")
    args = parser.parse_args()
    print(machine())
    start = time.perf_counter()
    memo = Memo(pretrained_encoder("dlib-resnet"), "dlib-resnet")
    faces = photos("celeba299", embed=memo)
    x = memo(as_hwc(faces.chips)).astype(np.float64)
    memo.save()
    threshold = args.threshold or DEFAULT_THRESHOLDS["dlib-resnet"]
    labels = np.asarray(faces.labels)
    rng = np.random.default_rng(0)
    eligible = [p for p in np.unique(labels) if (labels == p).sum() >= 6]
    eligible = list(rng.permutation(eligible))
    strangers, known = eligible[: len(eligible) // 5], eligible[len(eligible) // 5 :]
    order = {p: rng.permutation(np.flatnonzero(labels == p)) for p in eligible}
    genuine = np.concatenate([order[p][5:] for p in known])
    stranger = np.concatenate([order[p][5:] for p in strangers])
    print(
        f"celeba299 ({CELEBA_CREDIT}): {len(known)} enrolled persons and {len(strangers)} "
        f"strangers with >= 6 photos; {len(genuine)} genuine probes, {len(stranger)} stranger "
        f"probes; threshold {threshold} (DEFAULT_THRESHOLDS)"
    )
    print(
        f"{'rule':14} {'photos':>6} {'rank-1':>8} {'FRR':>7} {'wrong name':>10} "
        f"{'stranger accepted':>17}"
    )
    persons = np.array(known)
    for rule in ("nearest face", "mean template"):
        for count in COUNTS:
            rows = np.concatenate([order[p][:count] for p in known])
            d = person_distances(x[genuine], x[rows], labels[rows], persons, rule)
            best, nearest = persons[d.argmin(axis=1)], d.min(axis=1)
            right = best == labels[genuine]
            accepted = nearest <= threshold
            s = person_distances(x[stranger], x[rows], labels[rows], persons, rule).min(axis=1)
            print(
                f"{rule:14} {count:6d} {right.mean():8.2%} {(~accepted).mean():7.2%} "
                f"{(accepted & ~right).mean():10.2%} {(s <= threshold).mean():17.2%}"
            )
    print(f"{machine()}, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
