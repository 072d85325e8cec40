"""``tripletface train DATA --out RUN/``: learn an encoder with the triplet loss.

DATA is a folder holding one sub-folder of images per person, or ``synthetic`` (optionally
``synthetic:PERSONS`` or ``synthetic:PERSONSxIMAGES``) for the built-in rendered faces. Runs
under ``torchrun`` too: each process trains on its share of every P x K batch, triplets are mined
over the global batch, and only rank 0 writes RUN/. For an encoder that takes aligned face chips
(dlib-resnet) a folder of photos becomes those chips, detected once and cached
in RUN/faces.npz; ``--pretrained`` fine-tunes those weights, ``--freeze N`` keeps early stages.
"""

import argparse
import copy
import json
import re
import sys
from dataclasses import asdict, fields
from pathlib import Path

from tripletface.errors import InputError

SYNTHETIC = re.compile(r"synthetic(?::(\d+)(?:x(\d+))?)?")
#: Persons and pictures per person of ``synthetic`` without numbers (the seed's example).
SYNTHETIC_DEFAULT = (1000, 10)
#: Triplets per row of RUN/triplets.png (the first and the last batch).
TRIPLETS_SHOWN = 5


def register(subparsers) -> None:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="train an encoder with the triplet loss",
        description="Train an encoder with the triplet loss on P x K batches with online "
        "triplet selection; writes RUN/metrics.csv and RUN/last.pt.",
    )
    p.set_defaults(run=run)
    p.add_argument(
        "data", metavar="DATA", help="folder per person, or synthetic[:PERSONS[xIMAGES]]"
    )
    p.add_argument("--out", required=True, type=Path, metavar="RUN", help="run folder")
    p.add_argument("--encoder", default="compact", help="architecture name (compact)")
    p.add_argument("--size", type=int, help="image side in pixels (encoder's default: 64 compact)")
    p.add_argument(
        "--strategy", default="semihard", help="random, all, semihard or hard (semihard)"
    )
    p.add_argument("--margin", type=float, default=0.2, help="triplet margin (0.2)")
    p.add_argument("--p", type=int, default=32, help="persons per batch (32)")
    p.add_argument("--k", type=int, default=4, help="images per person in a batch (4)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps (1000)")
    length.add_argument("--epochs", type=int, help="passes over the data instead of --steps")
    p.add_argument("--optimizer", default="adam", help="adam or sgd (adam)")
    p.add_argument("--lr", type=float, help="learning rate (1e-3; 1e-4 with --pretrained)")
    p.add_argument("--schedule", default="cosine", help="cosine, step or constant (cosine)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="(0)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (0)")
    p.add_argument("--threads", type=int, help="torch CPU threads (torch's default)")
    p.add_argument("--workers", type=int, default=0, help="image-decoding processes (0)")
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help="random flips and shifts (default: on for folders, off for synthetic)",
    )
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="fine-tune the encoder's pretrained weights (dlib-resnet)",
    )
    p.add_argument(
        "--freeze",
        dest="freeze_stages",
        type=int,
        default=0,
        metavar="N",
        help="with --pretrained: keep the stem and the first N stages fixed (0)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        help="aligned-face cache of a photo folder for pretrained encoders (RUN/faces.npz)",
    )
    p.add_argument("--checkpoint-every", type=int, default=200, help="steps (200)")
    p.add_argument(
        "--resume", action="store_true", help="continue RUN/last.pt with its own settings"
    )
    p.add_argument("--json", action="store_true", help="print the run summary as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--face",
        choices=("largest", "centre"),
        default="largest",
        help="the face of a photo with several: the largest (default) or the one nearest the "
        "centre (evaluate and calibrate compare faces with the encoder instead)",
    )


def _dataset(
    data: str, size: int, encoder: str, cache: Path, progress: bool, face: str = "largest"
):
    """The data set DATA names, its images at size x size; a photo folder for an encoder with
    aligned chips (dlib-resnet) gives those chips, detected once and cached."""
    match = SYNTHETIC.fullmatch(data)
    if match:
        from tripletface.data.synthetic import SyntheticFaces

        persons = int(match[1] or SYNTHETIC_DEFAULT[0])
        images = int(match[2] or SYNTHETIC_DEFAULT[1])
        return SyntheticFaces(persons, images, size=size)
    if data.startswith("synthetic") and not Path(data).exists():
        raise InputError(f"DATA {data!r}: write synthetic, synthetic:PERSONS or synthetic:PxI")
    from tripletface.data.chips import photo_dataset
    from tripletface.models import encoder_class

    photos = photo_dataset(
        data,
        (size, size),
        encoder_class(encoder).chip_padding,
        cache=cache,
        progress=progress,
        rule=face,
    )
    print(photos.summary(), file=sys.stderr)
    return photos


def _config(args):
    """The TrainConfig the arguments ask for; with --resume, the checkpoint's own."""
    from tripletface.models.checkpoint import load_checkpoint
    from tripletface.train import TrainConfig

    if args.resume:
        config = TrainConfig.from_dict(load_checkpoint(args.out / "last.pt")["config"])
        if args.steps or args.epochs:
            config.steps, config.epochs = args.steps, args.epochs
        return config
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    given = {name: value for name, value in given.items() if value is not None}
    if args.steps is None and args.epochs is None:
        given["steps"] = TrainConfig.steps
    given["out"] = str(args.out)
    given["augment"] = (
        args.augment if args.augment is not None else not SYNTHETIC.fullmatch(args.data)
    )
    return TrainConfig(**given)


def run(args) -> int:
    """Train, print where the run went; exit 0."""
    import torch.distributed

    from tripletface.distributed import init_from_environment, is_main_process
    from tripletface.models import encoder_class
    from tripletface.train import check_config, fit, initial_encoder, triplet_rows

    config, encoder = _config(args), None
    if args.freeze_stages and not args.pretrained:
        raise InputError("--freeze keeps pretrained stages fixed: add --pretrained")
    if args.pretrained and not args.resume:
        from tripletface.finetune import finetune_setup

        config, encoder = finetune_setup(config, args.freeze_stages, args.lr)
    check_config(config)
    size = config.size or encoder_class(config.encoder).input_size[0]
    cache = args.cache or args.out / "faces.npz"
    dataset = _dataset(args.data, size, config.encoder, cache, not args.quiet, args.face)
    joined = init_from_environment()
    main = is_main_process()
    initial = None  # a resumed run's first weights are gone (they may have been pretrained)
    if main and not args.resume:
        initial = initial_encoder(config) if encoder is None else copy.deepcopy(encoder)
    try:
        result = fit(config, dataset, encoder, resume=args.resume, progress=not args.quiet)
    finally:
        if joined:
            torch.distributed.destroy_process_group()
    if main:
        from tripletface.plots import plot_training, plot_triplets

        summary = {**result.summary(), "config": asdict(config)}
        summary["plot"] = str(plot_training(args.out / "metrics.csv", args.out / "training.png"))
        if initial is not None:
            rows = triplet_rows(dataset, {config.strategy: (initial, result)}, TRIPLETS_SHOWN)
            triplets = plot_triplets(rows, config.margin, args.out / "triplets.png")
            summary["triplets"] = str(triplets)
        if args.json:
            print(json.dumps(summary))
        else:
            print(
                f"trained {result.step} steps in {result.seconds:.0f} s "
                f"({summary['images_per_s']:.0f} images/s), last loss {summary['loss']:.4f}, "
                f"active {summary['active_fraction']:.1%}; checkpoint {result.checkpoint}, "
                f"curves {summary['plot']}"
                + (f", triplets chosen {summary['triplets']}" if "triplets" in summary else "")
            )
    return 0
