"""Which face of a labelled photo with several faces is the labelled person: rules measured.

On celeba299 (299 persons, 6300 colour photos in the wild; CelebA, Liu et al. ICCV 2015) and ORL
(40 persons x 10 grayscale photos), every face of every photo is detected once ("auto": HOG on
the photo doubled, then quadrupled, then the CNN) and cut into dlib's chips (cached, see
bench/_photos.py). Each rule of ``tripletface.faces.choice.FACE_RULES`` then picks one face per
photo: the one nearest the photo's centre, the largest, or the one most similar (pretrained
dlib-resnet) to the person's other photos. Printed per rule: one-shot rank-1 (each person's
first photo enrolled, the others identified), 10-fold verification accuracy and TAR at FAR 1e-3
on 20,000 seeded balanced pairs, and on how many photos the rule picks another face than the
centre rule.

    python bench/face_choice.py
"""

import time

import numpy as np
import torch
from _photos import CELEBA_CREDIT, Memo, as_hwc, machine, photos

from tripletface.evaluate import evaluate
from tripletface.faces.choice import FACE_RULES
from tripletface.finetune import pretrained_encoder


def main() -> None:
    print(machine())
    start = time.perf_counter()
    memo = Memo(pretrained_encoder("dlib-resnet"), "dlib-resnet")
    for name in ("celeba299", "orl"):
        print(f"\n{name}" + (f": {CELEBA_CREDIT}" if name == "celeba299" else ""))
        chosen = {}
        for rule in FACE_RULES:
            faces = photos(name, rule, embed=memo)
            chosen[rule] = as_hwc(faces.chips)
            report = evaluate(memo.encoder, faces, pairs_count=20000)
            differs = int(np.any(chosen[rule] != chosen["centre"], axis=(1, 2, 3)).sum())
            print(
                f"  {rule:8} rank-1 {100 * report.rank1:6.2f}% ({report.probes} probes), "
                f"verification {100 * report.verification_accuracy:.2f}% "
                f"+- {100 * report.verification_accuracy_std:.2f}, "
                f"TAR {100 * report.val_at_far:.2f}% at FAR 1e-3 ({report.same_pairs} same / "
                f"{report.different_pairs} different "
                f"pairs); another face than centre's on {differs} of "
                f"{len(faces.several_faces)} photos with several faces"
            )
        memo.save()
    print(f"\n{machine()}, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
