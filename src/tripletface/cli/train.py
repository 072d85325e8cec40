"""``tripletface train DATA --out RUN/``: learn an encoder with the triplet loss.

DATA is a folder holding one sub-folder of images per person, or ``synthetic`` (optionally
``synthetic:PERSONS`` or ``synthetic:PERSONSxIMAGES``) for the built-in rendered faces. Runs
under ``torchrun`` too: each process trains on its share of every P x K batch, triplets are mined
over the global batch, and only rank 0 writes RUN/. For an encoder that takes aligned face chips
(dlib-resnet) a folder of photos becomes those chips, detected once and cached
in RUN/faces.npz; ``--pretrained`` fine-tunes those weights, ``--freeze N`` keeps early stages.
Fine-tuning a photo folder can also hold persons apart for early stopping (``--held-apart N``,
the kept weights in RUN/best.pt), add embedding distillation toward the pretrained network
(``--distill W``) and adapt to a simulated camera (``--condition low-resolution|mask``); see
``tripletface.finetune.finetune_chips``.
"""

import argparse
import copy
import json
import math
import re
import sys
from dataclasses import asdict, fields
from pathlib import Path

from tripletface.cli.arguments import at_least
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
    p.add_argument(
        "--lr",
        type=float,
        help="learning rate (1e-3; with --pretrained 2e-6, or 6e-6 with --condition)",
    )
    p.add_argument("--schedule", default="cosine", help="cosine, step or constant (cosine)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="(0)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (0)")
    p.add_argument("--threads", type=int, help="torch CPU threads (torch's default)")
    p.add_argument("--workers", type=at_least(0), default=0, help="image-decoding processes (0)")
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help="random flips and shifts (default: on for folders, off for synthetic faces and "
        "with --pretrained: aligned chips need no shifts, and distillation targets are of the "
        "chips as they are)",
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
        "--distill",
        type=float,
        metavar="W",
        help="with --pretrained: weight of the squared distance to the pretrained network's "
        "embedding of each (clean) photo, added to the triplet loss (0; 3 with --condition)",
    )
    p.add_argument(
        "--condition",
        metavar="NAME",
        help="with --pretrained: also train on every photo as the camera NAME gives it "
        "(low-resolution or mask), early-stopping on held-apart pairs in that condition",
    )
    p.add_argument(
        "--held-apart",
        type=int,
        metavar="N",
        help="with --pretrained: hold N persons apart, keep the weights that score best on "
        "them (TAR at FAR 1e-3) in RUN/best.pt, stop when they stop improving (0: none)",
    )
    p.add_argument(
        "--every", type=int, default=25, help="steps between checks on held-apart persons (25)"
    )
    p.add_argument(
        "--patience", type=int, default=3, help="checks without improvement before stopping (3)"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        help="with --condition: held-apart TAR on clean photos the kept weights may lose (0.02)",
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
    p.add_argument(
        "--force", action="store_true", help="start a new run in a RUN/ that holds one already"
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
    """The TrainConfig the arguments ask for; with --resume, the checkpoint's own in RUN/ (which
    may have moved since) and InputError when it is at the end of the steps asked already."""
    from tripletface.models.checkpoint import load_checkpoint
    from tripletface.train import TrainConfig, check_steps_left

    if args.resume:
        checkpoint = args.out / "last.pt"
        state = load_checkpoint(checkpoint)
        config = TrainConfig.from_dict({**state["config"], "out": str(args.out)})
        if _uses_finetuning(config):
            raise InputError(
                f"{checkpoint} was fine-tuned with --held-apart, --condition or --distill, "
                "which do not resume: start a new run in another folder"
            )
        if args.steps is not None or args.epochs is not None:
            config.steps, config.epochs = args.steps, args.epochs
        # Before the data loads: a run asked for in epochs is checked by fit once it has.
        check_steps_left(checkpoint, state["step"], config)
        return config
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    given = {name: value for name, value in given.items() if value is not None}
    if args.steps is None and args.epochs is None:
        given["steps"] = TrainConfig.steps
    given["out"] = str(args.out)
    default = not SYNTHETIC.fullmatch(args.data) and not args.pretrained
    given["augment"] = args.augment if args.augment is not None else default
    return TrainConfig(**given)


def _check_new_run(args) -> None:
    """InputError when a new run would overwrite the one in RUN/ (unless --force)."""
    last = args.out / "last.pt"
    if not args.resume and not args.force and last.exists():
        raise InputError(
            f"--out {args.out} holds a run already ({last}): --resume it, give another --out, "
            "or --force to start again there"
        )


def _uses_finetuning(config) -> bool:
    """Whether the config asks for what only ``finetune_chips`` does."""
    return bool(config.distill or config.condition or config.held_apart)


def _check_finetuning(args, config) -> None:
    """InputError when fine-tuning options come without what they need."""
    if args.freeze_stages and not args.pretrained:
        raise InputError("--freeze keeps pretrained stages fixed: add --pretrained")
    if _uses_finetuning(config) and not args.pretrained:
        raise InputError("--held-apart, --condition and --distill fine-tune: add --pretrained")
    if (args.every < 1 or args.patience < 1) and config.held_apart:
        raise InputError(f"--every {args.every} and --patience {args.patience} must be >= 1")
    if args.tolerance is not None and not 0 <= args.tolerance <= 1:
        raise InputError(f"--tolerance {args.tolerance}: give a share of TAR in [0, 1]")


def _finetune(args, config, dataset, encoder):
    """``finetune_chips`` on the photo folder's chips; the kept weights go to RUN/best.pt."""
    from tripletface.data.chips import ChipSet
    from tripletface.finetune import finetune_chips
    from tripletface.models.checkpoint import save_checkpoint

    if not isinstance(dataset, ChipSet):
        raise InputError(
            "--held-apart, --condition and --distill fine-tune on a folder of photos, "
            "not on synthetic faces"
        )
    result = finetune_chips(
        config,
        dataset,
        encoder,
        every=args.every,
        patience=args.patience,
        tolerance=args.tolerance,
        progress=not args.quiet,
    )
    extra = {}
    if config.held_apart:
        best = save_checkpoint(
            args.out / "best.pt", result.encoder, config=asdict(config), step=result.best_step
        )
        extra = {
            "best": str(best),
            "kept_step": result.best_step,
            # -inf (clean photos forgotten) is no JSON number: null.
            "held_apart_scores": [
                [step, score if math.isfinite(score) else None] for step, score in result.scores
            ],
        }
    return result.run, result.trained_on, extra


def _kept(extra: dict) -> str:
    """What early stopping kept, for the one-line report ("" without held-apart persons)."""
    if not extra:
        return ""
    scores = ", ".join(
        f"{step}: {'refused' if score is None else f'{score:.2%}'}"
        for step, score in extra["held_apart_scores"]
    )
    step, best = extra["kept_step"], extra["best"]
    return f"; kept the weights of step {step} (held-apart TAR {scores}) in {best}"


def run(args) -> int:
    """Train, print where the run went; exit 0."""
    from tripletface.outputs import tentative_folder
    from tripletface.train import check_config

    config = _config(args)
    _check_finetuning(args, config)
    check_config(config)  # before the pretrained weights load; fine-tuning keeps it valid
    _check_new_run(args)
    # before the slow part (weights, photos, faces, training); a run refused there leaves no RUN/
    with tentative_folder(args.out, "--out"):
        return _train(args, config)


def _train(args, config) -> int:
    """The run itself, into the existing folder ``args.out``; exit 0."""
    import torch.distributed

    from tripletface.distributed import init_from_environment, is_main_process
    from tripletface.models import encoder_class
    from tripletface.train import fit, initial_encoder, triplet_rows

    encoder = None
    if args.pretrained and not args.resume:
        from tripletface.finetune import finetune_setup

        config, encoder = finetune_setup(config, args.freeze_stages, args.lr, args.distill)
    size = config.size or encoder_class(config.encoder).input_size[0]
    cache = args.cache or args.out / "faces.npz"
    dataset = _dataset(args.data, size, config.encoder, cache, not args.quiet, args.face)
    joined = init_from_environment()
    main = is_main_process()
    initial = None  # a resumed run's first weights are gone (they may have been pretrained)
    if main and not args.resume:
        initial = initial_encoder(config) if encoder is None else copy.deepcopy(encoder)
    extra = {}
    try:
        if _uses_finetuning(config):
            result, dataset, extra = _finetune(args, config, dataset, encoder)
        else:
            result = fit(config, dataset, encoder, resume=args.resume, progress=not args.quiet)
    finally:
        if joined:
            torch.distributed.destroy_process_group()
    if main:
        from tripletface.plots import plot_training, plot_triplets

        summary = {**result.summary(), **extra, "config": asdict(config)}
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
                + _kept(extra)
            )
    return 0
