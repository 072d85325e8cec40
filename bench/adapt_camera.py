"""Adapting dlib-resnet to a camera unlike its training photos, measured on persons it never saw.

Conditions (``tripletface.data.conditions``, applied to celeba299's aligned chips; CelebA, Liu et
al. ICCV 2015): "low resolution", a distant camera whose faces are 24-32 pixels wide (drawn per
photo, seeded) stored as JPEG at quality 30-70, and "mask", a surgical mask drawn over nose and
mouth. Same person split as bench/finetune_celeba.py. For each condition: the pretrained network
on the unseen persons' photos in that condition (and clean), then after fine-tuning on the
training persons' photos, each photo both clean and in the condition (so that clean photos are
not forgotten), early stopping on the held-apart persons' photos likewise doubled. Goal: recover
at least half of what the condition costs, lose at most 0.5 points of verification on clean
photos.

    python bench/adapt_camera.py [--seeds 0] [--steps 45] [--freeze 3] [--lr 1e-5]
"""

import time

import numpy as np
import torch
from _photos import CELEBA_CREDIT, Memo, as_hwc, machine, photos
from finetune_celeba import arguments, measure, split, summary, tune

from tripletface.data.chips import ChipSet
from tripletface.data.conditions import chip_face_width, face_mask, low_resolution
from tripletface.faces.align import chip_landmarks
from tripletface.finetune import pretrained_encoder


def low_res(chip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A chip as a distant JPEG camera gives it: face 24-32 px wide, quality 30-70."""
    return low_resolution(
        chip, chip_face_width(), face_pixels=rng.uniform(24, 32), quality=int(rng.integers(30, 71))
    )


def masked(chip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A chip with a mask drawn over nose and mouth."""
    return face_mask(chip, chip_landmarks())


CONDITIONS = {"low resolution": low_res, "mask": masked}


def in_condition(chips: ChipSet, condition, seed: int = 0) -> ChipSet:
    """The chips with the condition applied to each (seeded per chip order)."""
    rng = np.random.default_rng(seed)
    changed = np.stack([condition(chip, rng) for chip in as_hwc(chips.chips)])
    tensor = torch.from_numpy(changed).permute(0, 3, 1, 2).contiguous()
    return ChipSet(tensor, chips.labels, chips.classes, chips.paths)


def doubled(clean: ChipSet, changed: ChipSet) -> ChipSet:
    """Both versions of every chip, under the same labels."""
    return ChipSet(
        torch.cat([clean.chips, changed.chips]),
        clean.labels + changed.labels,
        clean.classes,
        clean.paths + changed.paths,
    )


def main() -> None:
    args = arguments(__doc__.splitlines()[0], seeds=(0,), steps=45, lr=1e-5)
    torch.set_num_threads(args.threads)
    print(machine())
    start = time.perf_counter()
    memo = Memo(pretrained_encoder("dlib-resnet"), "dlib-resnet")
    faces = photos("celeba299", embed=memo)
    print(f"celeba299 ({CELEBA_CREDIT}), seeds {args.seeds}")
    for name, condition in CONDITIONS.items():
        rows = {key: [] for key in ("clean before", "cond before", "cond after", "clean after")}
        for seed in args.seeds:
            train, held, unseen = split(faces, seed)
            unseen_changed = in_condition(unseen, condition, seed + 1000)
            rows["clean before"].append(measure(memo.encoder, unseen))
            rows["cond before"].append(measure(memo.encoder, unseen_changed))
            encoder = tune(
                args,
                seed,
                doubled(train, in_condition(train, condition, seed)),
                doubled(held, in_condition(held, condition, seed + 500)),
            )
            rows["cond after"].append(measure(encoder, unseen_changed))
            rows["clean after"].append(measure(encoder, unseen))
        memo.save()
        print(f"{name}: unseen persons, mean +- standard deviation over seeds")
        for key, values in rows.items():
            print("  " + summary(key, values))
        cost = np.mean([r["verification"] for r in rows["clean before"]]) - np.mean(
            [r["verification"] for r in rows["cond before"]]
        )
        regained = np.mean([r["verification"] for r in rows["cond after"]]) - np.mean(
            [r["verification"] for r in rows["cond before"]]
        )
        clean_loss = np.mean([r["verification"] for r in rows["clean before"]]) - np.mean(
            [r["verification"] for r in rows["clean after"]]
        )
        print(
            f"  the condition costs {cost:.2f} points of verification; fine-tuning recovers "
            f"{regained:.2f} ({regained / cost:.0%} of it, goal >= 50%); clean photos "
            f"{'lose' if clean_loss > 0 else 'gain'} {abs(clean_loss):.2f} points (goal <= 0.5)"
        )
    print(f"{machine()}, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
