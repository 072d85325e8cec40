"""Adapting dlib-resnet to a camera unlike its training photos, measured on persons it never saw.

Conditions (``tripletface.data.conditions.on_chips``, applied to celeba299's aligned chips;
CelebA, Liu et al. ICCV 2015): "low-resolution", a distant camera whose faces are 24-32 pixels
wide (drawn per chip, seeded) stored as JPEG at quality 30-70, and "mask", a surgical mask drawn
over nose and mouth. The changed chips are cached beside the clean ones. Same person split as
bench/finetune_celeba.py. For each condition: the pretrained network on the unseen persons'
photos in that condition (and clean), then after ``tripletface.finetune.finetune_chips`` on the
known persons (what ``tripletface train --pretrained --condition NAME`` runs): every training
photo both clean and in the condition (the camera drawn anew every epoch; ``--no-redraw``: the
one cached draw per photo, as the held-apart and unseen persons' photos are), the triplet loss
plus ``--distill`` times the squared distance from each chip's embedding to the pretrained
network's embedding of the clean photo, early stopping on held-apart persons' pairs in the
condition, refusing weights that lose more than ``--tolerance`` of TAR on their clean photos.
Goal: recover at least half of what the condition costs, lose at most 0.5 points of
verification on clean photos. The "clean vs cond" rows enroll each unseen person's clean
photo and match photos in the condition against it (``evaluate(..., probes=...)``): good photos
enrolled, the camera's recognised.

    python bench/adapt_camera.py [--seeds 0 1 2] [--epochs 6] [--freeze 1] [--lr 6e-6]
                                 [--distill 3] [--tolerance 0.02] [--train-persons 170]
                                 [--no-redraw]
"""

import hashlib
import time

import numpy as np
import torch
from _photos import CACHE, CELEBA_CREDIT, Memo, machine, photos
from finetune_celeba import arguments, measure, split, summary, tune

from tripletface.cache import write_atomic
from tripletface.data.chips import ChipSet, in_condition
from tripletface.data.conditions import CONDITIONS
from tripletface.finetune import CAMERA_DISTILL, CAMERA_LR, CAMERA_TOLERANCE, pretrained_encoder

#: Seed of the camera settings drawn for each chip (one draw per photo, whatever the split).
CONDITION_SEED = 1000
#: Rows of each condition's table; "clean vs cond": enrolled from the clean photo, every probe
#: and each pair's second photo in the condition (good photos enrolled, the camera's recognised).
ROWS = (
    "clean before",
    "cond before",
    "clean vs cond before",
    "cond after",
    "clean vs cond after",
    "clean after",
)


def changed_chips(faces: ChipSet, condition: str) -> ChipSet:
    """All chips in ``condition``, cached in CACHE (rebuilt when the clean chips change)."""
    key = hashlib.sha1(faces.chips.numpy().tobytes()).hexdigest() + f"-{CONDITION_SEED}"
    path = CACHE / f"celeba299-{condition}-chips.npz"
    if path.is_file():
        with np.load(path) as data:
            if str(data["key"]) == key:
                chips = torch.from_numpy(data["chips"])
                return ChipSet(chips, faces.labels, faces.classes, faces.paths)
    changed = in_condition(faces, condition, CONDITION_SEED, faces.padding)
    chips = changed.chips.numpy()
    write_atomic(path, lambda stream: np.savez(stream, key=np.array(key), chips=chips))
    return changed


def main() -> None:
    args = arguments(
        __doc__.splitlines()[0],
        seeds=(0, 1, 2),
        epochs=6,
        lr=CAMERA_LR,
        freeze=1,
        distill=CAMERA_DISTILL,
        conditions=CONDITIONS,
        tolerance=CAMERA_TOLERANCE,
    )
    torch.set_num_threads(args.threads)
    print(machine())
    start = time.perf_counter()
    memo = Memo(pretrained_encoder("dlib-resnet"), "dlib-resnet")
    faces = photos("celeba299", embed=memo)
    print(
        f"celeba299 ({CELEBA_CREDIT}), seeds {args.seeds}, {args.train_persons} persons trained on"
    )
    for condition in args.conditions:
        changed = changed_chips(faces, condition)
        rows = {key: [] for key in ROWS}
        for seed in args.seeds:
            known, unseen = split(faces, seed, args.train_persons)
            clean, camera = faces.persons(unseen), changed.persons(unseen)
            rows["clean before"].append(measure(memo.encoder, clean))
            rows["cond before"].append(measure(memo.encoder, camera))
            rows["clean vs cond before"].append(measure(memo.encoder, clean, probes=camera))
            tuned = tune(args, seed, faces.persons(known), condition, changed.persons(known))
            encoder = Memo(tuned, None).encoder  # each set is measured twice: embed it once
            rows["cond after"].append(measure(encoder, camera))
            rows["clean vs cond after"].append(measure(encoder, clean, probes=camera))
            rows["clean after"].append(measure(encoder, clean))
        memo.save()
        print(f"{condition}: unseen persons, mean +- standard deviation over seeds")
        for key, values in rows.items():
            print("  " + summary(key, values))
        mean = {key: np.mean([r["verification"] for r in values]) for key, values in rows.items()}
        clean_loss = mean["clean before"] - mean["clean after"]
        for pairs, before, after in (
            ("", "cond before", "cond after"),
            (" with clean photos enrolled", "clean vs cond before", "clean vs cond after"),
        ):
            cost = mean["clean before"] - mean[before]
            regained = mean[after] - mean[before]
            share = f"{regained / cost:.0%}" if cost > 0 else "n/a"
            print(
                f"  the condition costs {cost:.2f} points of verification{pairs}; fine-tuning "
                f"recovers {regained:.2f} ({share} of it, goal >= 50%)"
            )
        print(
            f"  clean photos {'lose' if clean_loss > 0 else 'gain'} {abs(clean_loss):.2f} "
            "points (goal <= 0.5)",
            flush=True,
        )
    print(f"{machine()}, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
