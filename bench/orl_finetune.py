"""Fine-tuning dlib-resnet with the triplet loss on 20 ORL persons, measured on the 20 others.

ORL (AT&T, 40 persons x 10 small grayscale portraits) is split by person with a fixed seed: 20
persons to fine-tune on, 20 unseen ones to measure. Faces are found by the library's detector in
"auto" mode with one doubling (HOG on the photo doubled, then quadrupled, then the CNN), aligned
into dlib's 150 x 150 chips and cached (``AlignedFaces``); photos where no face is found are
counted and left out. The pretrained encoder (unit-length outputs) is measured on the unseen
persons, fine-tuned (``tripletface.finetune`` + ``tripletface.train.fit``: P x K batches,
semi-hard triplets, stem and first stages frozen, low learning rate), and measured again with
``tripletface.evaluate``: one-shot rank-1 (first photo of each person enrolled, the others
identified) and 10-fold verification accuracy (all same-person pairs, as many different-person
ones, seed 0). The 20 training persons are measured too, to tell learning from forgetting.

    python bench/orl_finetune.py [--data ../shared/data/orl] [--steps 60] [--freeze 3]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tripletface.evaluate import evaluate
from tripletface.faces.detect import FaceDetector
from tripletface.finetune import aligned_faces, finetune_setup
from tripletface.train import TrainConfig, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/orl"
    )
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "tripletface-orl-chips.npz"
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--freeze", type=int, default=3, help="frozen stages after the stem")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--strategy", default="semihard")
    parser.add_argument("--p", type=int, default=10)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="person split and training seed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"cores {os.cpu_count()}, torch threads {args.threads}, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )

    start = time.perf_counter()
    faces = aligned_faces(
        args.data, "dlib-resnet", cache=args.cache, detector=FaceDetector("auto", upsample=1)
    )
    print(f"{faces.summary()} in {time.perf_counter() - start:.1f} s")
    order = np.random.default_rng(args.seed).permutation(len(faces.classes))
    names = [faces.classes[i] for i in order]
    train, unseen = faces.persons(names[:20]), faces.persons(names[20:40])
    print(
        f"split (seed {args.seed}): {len(train)} chips of 20 persons to fine-tune on, "
        f"{len(unseen)} chips of 20 unseen persons"
    )

    base = TrainConfig(
        encoder="dlib-resnet",
        p=args.p,
        k=args.k,
        strategy=args.strategy,
        margin=args.margin,
        steps=args.steps,
        seed=args.seed,
        augment=True,
    )
    config, encoder = finetune_setup(base, freeze=args.freeze, lr=args.lr)
    before = {
        name: evaluate(encoder, part) for name, part in (("unseen", unseen), ("train", train))
    }
    trainable = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    total = sum(p.numel() for p in encoder.parameters())
    print(
        f"fine-tuning: {config.steps} steps of {config.p} x {config.k}, {config.strategy}, "
        f"margin {config.margin}, lr {config.lr} ({config.schedule}), frozen {config.freeze}, "
        f"{trainable} of {total} parameters trained, flips and shifts"
    )
    result = fit(config, train, encoder, progress=False)
    history = result.history
    print(
        f"  {result.seconds:.0f} s, {1000 * result.seconds / result.step:.0f} ms per step; "
        f"first 5 steps loss {np.mean([r['loss'] for r in history[:5]]):.4f} active "
        f"{np.mean([r['active_fraction'] for r in history[:5]]):.1%}, last 5 loss "
        f"{np.mean([r['loss'] for r in history[-5:]]):.4f} active "
        f"{np.mean([r['active_fraction'] for r in history[-5:]]):.1%}"
    )
    after = {
        name: evaluate(result.encoder, part)
        for name, part in (("unseen", unseen), ("train", train))
    }
    for name in ("unseen", "train"):
        for label, report in (("before", before[name]), ("after", after[name])):
            print(
                f"{name:6} persons {label:6}: rank-1 {100 * report.rank1:6.2f}% "
                f"({round((1 - report.rank1) * report.probes)} of {report.probes} missed), "
                f"verification {100 * report.verification_accuracy:.2f}% "
                f"+- {100 * report.verification_accuracy_std:.2f} (10-fold, {report.same_pairs} "
                f"same / {report.different_pairs} different pairs), AUC {report.roc_auc:.4f}, "
                f"EER {100 * report.eer:.2f}%"
            )
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
