"""Fine-tuning dlib-resnet on celeba299 persons, measured on persons it never saw.

celeba299 (299 persons, 6300 colour photos in the wild; CelebA, Liu et al. ICCV 2015) chips,
faces chosen by the default rule (bench/_photos.py), are split by person for each seed: 200
persons known, the 99 others never seen. ``tripletface.finetune.finetune_chips`` runs what
``tripletface train --pretrained`` runs: of the 200 known persons, 30 are held apart for early
stopping (TAR at FAR 1e-3 over all their pairs, checked every ``--every`` steps; the pretrained
weights are kept when no check beats them) and 170 are trained on: P x K semi-hard triplet
batches plus ``--distill`` times the squared distance from each chip's embedding to the
pretrained network's embedding of it (embedding distillation, "learning without forgetting"),
the stem and the first ``--freeze`` stages frozen, a low learning rate. On the 99 unseen
persons, before and after: 10-fold verification accuracy and TAR at FAR 1e-3 on 20,000 seeded
balanced pairs, one-shot rank-1 (first photo enrolled). Mean and spread over the seeds.

    python bench/finetune_celeba.py [--seeds 0 1 2] [--epochs 3] [--lr 2e-6] [--distill 1]
"""

import argparse
import time

import numpy as np
import torch
from _photos import CELEBA_CREDIT, Memo, machine, photos

from tripletface.data.chips import ChipSet
from tripletface.evaluate import evaluate
from tripletface.finetune import finetune_chips, finetune_setup, pretrained_encoder
from tripletface.train import TrainConfig

KNOWN_PERSONS, HELD_PERSONS = 200, 30


def arguments(
    description: str,
    seeds: tuple[int, ...] = (0, 1, 2),
    epochs: int = 3,
    lr: float = 2e-6,
    freeze: int = 3,
    distill: float = 1.0,
    conditions: tuple[str, ...] = (),
    tolerance: float = 0.01,
) -> argparse.Namespace:
    """The fine-tuning settings every celeba299 fine-tuning bench takes (defaults: the runs the
    README quotes); ``conditions`` adds --conditions with those defaults."""
    parser = argparse.ArgumentParser(description=description)
    if conditions:
        parser.add_argument("--conditions", nargs="+", default=list(conditions))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    parser.add_argument("--epochs", type=int, default=epochs, help="passes over the chips")
    parser.add_argument("--freeze", type=int, default=freeze, help="frozen stages after the stem")
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--distill", type=float, default=distill, help="distillation weight")
    parser.add_argument("--pull", type=float, default=0.0, help="share pulled back per step")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument(
        "--redraw",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with a condition: draw the training photos' camera anew every epoch",
    )
    parser.add_argument("--p", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--every", type=int, default=40, help="steps between held-apart checks")
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--tolerance", type=float, default=tolerance, help="clean TAR to lose")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--train-persons",
        type=int,
        default=KNOWN_PERSONS - HELD_PERSONS,
        help="known persons trained on (fewer: how the gain grows with persons)",
    )
    args = parser.parse_args()
    if not 2 <= args.train_persons <= KNOWN_PERSONS - HELD_PERSONS:
        parser.error(f"--train-persons must be 2-{KNOWN_PERSONS - HELD_PERSONS}")
    return args


def split(faces: ChipSet, seed: int, train_persons: int = KNOWN_PERSONS - HELD_PERSONS):
    """(known person names, the 99 unseen ones), drawn with ``seed``: the first HELD_PERSONS +
    ``train_persons`` of the 200 known (all by default); the unseen are the same whatever
    ``train_persons``."""
    order = np.random.default_rng(seed).permutation(len(faces.classes))
    names = [faces.classes[i] for i in order]
    return names[: HELD_PERSONS + train_persons], names[KNOWN_PERSONS:]


def measure(encoder, chips: ChipSet, probes: ChipSet | None = None) -> dict[str, float]:
    """Verification accuracy, TAR at FAR 1e-3 and rank-1 (all in %) of an encoder on chips
    (``probes``: the same chips seen another way, matched against the gallery of ``chips``)."""
    report = evaluate(encoder, chips, pairs_count=20000, probes=probes)
    return {
        "verification": 100 * report.verification_accuracy,
        "TAR@1e-3": 100 * report.val_at_far,
        "rank-1": 100 * report.rank1,
    }


def tune(args, seed: int, known: ChipSet, condition=None, changed: ChipSet | None = None):
    """The pretrained encoder fine-tuned on the known persons (``changed``: the same chips in
    ``condition``), early-stopped on the held-apart ones among them."""
    base = TrainConfig(
        encoder="dlib-resnet",
        p=args.p,
        k=args.k,
        strategy="semihard",
        margin=0.2,
        optimizer=args.optimizer,
        steps=None,
        epochs=args.epochs,
        seed=seed,
        augment=args.augment,
        schedule="constant",
        distill=args.distill,
        condition=condition,
        held_apart=HELD_PERSONS,
    )
    config, encoder = finetune_setup(base, freeze=args.freeze, lr=args.lr)
    result = finetune_chips(
        config,
        known,
        encoder,
        changed,
        every=args.every,
        patience=args.patience,
        pull=args.pull,
        tolerance=args.tolerance,
        redraw=args.redraw,
    )
    run = result.run
    print(
        f"  seed {seed}: {run.step} steps of {config.p} x {config.k} (in epoch {run.epoch + 1} "
        f"of {config.epochs}) in "
        f"{run.seconds:.0f} s, {config.optimizer} lr {config.lr}, frozen {config.freeze}, "
        f"distill {config.distill}, pull {args.pull}, augment {config.augment}"
        + (f", redraw {args.redraw}" if condition else "")
        + "; held-apart TAR "
        + ", ".join(f"{step}: {100 * score:.2f}%" for step, score in result.scores)
        + f"; kept step {result.best_step}",
        flush=True,
    )
    return result.encoder


def summary(label: str, rows: list[dict[str, float]]) -> str:
    """One line: mean +- spread (standard deviation over seeds) of each figure."""
    keys = rows[0]
    parts = [
        f"{key} {np.mean([r[key] for r in rows]):.2f} +- {np.std([r[key] for r in rows]):.2f}"
        for key in keys
    ]
    return f"{label:34} " + ", ".join(parts)


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    torch.set_num_threads(args.threads)
    print(machine())
    start = time.perf_counter()
    memo = Memo(pretrained_encoder("dlib-resnet"), "dlib-resnet")
    faces = photos("celeba299", embed=memo)
    print(
        f"celeba299 ({CELEBA_CREDIT}): {len(faces.classes)} persons; per seed "
        f"{KNOWN_PERSONS - HELD_PERSONS} trained on, {HELD_PERSONS} held apart for early "
        f"stopping, {len(faces.classes) - KNOWN_PERSONS} unseen"
    )
    before, after = [], []
    for seed in args.seeds:
        known, unseen = split(faces, seed, args.train_persons)
        before.append(measure(memo.encoder, faces.persons(unseen)))
        after.append(measure(tune(args, seed, faces.persons(known)), faces.persons(unseen)))
        for label, figures in (("before", before[-1]), ("after", after[-1])):
            print(f"    unseen {label:6} " + ", ".join(f"{k} {v:.2f}%" for k, v in figures.items()))
    memo.save()
    print(f"on the unseen persons, {len(args.seeds)} seeds (mean +- standard deviation):")
    print(summary("pretrained", before))
    print(summary("fine-tuned", after))
    print(f"{machine()}, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
