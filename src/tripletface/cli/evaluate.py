"""``tripletface evaluate``: verification and one-shot identification figures of an encoder.

Exit codes: 0 done, 2 bad arguments or data (one line on stderr saying which and what to do).
"""

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from tripletface.cli.arguments import at_least, print_warning, share

if TYPE_CHECKING:  # imported lazily at run time: the CLI starts without torch
    from torch.utils.data import Dataset

    from tripletface.data.chips import ChipSet


def register(subparsers) -> None:
    """Add the ``evaluate`` subcommand."""
    description = (
        "Evaluate an encoder on a folder with one sub-folder of images per person: LFW-protocol "
        "verification (10-fold accuracy, VAL at FAR 1e-3, ROC AUC, EER) on pairs from an LFW "
        "pairs file or drawn with a seed, and one-shot identification (each person's first image "
        "enrolled, rank-1 and rank-5 over the others; open-set rejection of unenrolled persons)."
    )
    p = subparsers.add_parser(
        "evaluate", help="verification and one-shot figures of an encoder", description=description
    )
    p.add_argument("data", type=Path, metavar="DATA", help="folder of person folders")
    p.add_argument(
        "--encoder", required=True, metavar="NAME|CHECKPOINT.pt", help="encoder name or checkpoint"
    )
    p.add_argument("--pairs", type=Path, metavar="PAIRS.txt", help="LFW pairs file (paths in DATA)")
    p.add_argument(
        "--pairs-count",
        type=at_least(2),
        default=6000,
        metavar="N",
        help="pairs to draw when no pairs file is given, half same-person (6000)",
    )
    p.add_argument("--folds", type=at_least(2), default=10, help="verification folds (10)")
    p.add_argument(
        "--unseen-share",
        type=share,
        default=0.2,
        metavar="S",
        help="share of persons left unenrolled for open-set rejection (0.2)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds pairs, folds, splits, weights, camera settings (0)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plots", type=Path, metavar="OUTDIR", help="write roc.png and distances.png")
    p.add_argument("--strict", action="store_true", help="fail on an unreadable image")
    p.add_argument(
        "--face",
        choices=("similar", "largest", "centre"),
        default="similar",
        help="the face of a photo with several: the most similar to the person's other photos "
        "(default), the largest, or the one nearest the centre",
    )
    p.add_argument(
        "--condition",
        metavar="NAME",
        help="every photo as the simulated camera NAME gives it (low-resolution or mask, seeded "
        "by --seed): what a camera will cost before you have its photos",
    )
    p.add_argument(
        "--enroll-clean",
        action="store_true",
        help="with --condition: keep the enrolled photos and each pair's first one as they are, "
        "every probe and each pair's second photo through the camera (good photos enrolled, the "
        "camera's recognised)",
    )
    p.set_defaults(run=run)


def _rate(value: float | None) -> str:
    """A rate to four decimals, or n/a when there was nothing to count."""
    return "n/a" if value is None else f"{value:.4f}"


def _summary(figures: dict, folds: int) -> str:
    """The report as aligned lines for a terminal."""
    far_key = next(key for key in figures if key.startswith("val_at_far_"))
    lines = [
        f"verification: {figures['pairs']} pairs ({figures['same_pairs']} same, "
        f"{figures['different_pairs']} different), {folds} folds",
        f"  accuracy        {figures['verification_accuracy']:.4f} "
        f"+- {figures['verification_accuracy_std']:.4f}",
        f"  VAL @ FAR={far_key[11:]:<6}{figures[far_key]:.4f} "
        f"(threshold {figures['val_threshold']:.4g})",
        f"  ROC AUC         {figures['roc_auc']:.4f}",
        f"  EER             {figures['eer']:.4f}",
        f"  threshold       {figures['threshold']:.4g} (squared distance, best accuracy)",
        f"one-shot identification: {figures['persons']} persons enrolled (first image), "
        f"{figures['probes']} probes",
        f"  rank-1          {figures['rank1']:.4f}",
        f"  rank-5          {figures['rank5']:.4f}",
        f"open set: {figures['unseen_persons']} persons unenrolled, at the threshold",
        f"  rejected        {_rate(figures['open_set_rejection'])} of unenrolled persons' probes",
        f"  identified      {_rate(figures['open_set_identification'])} of enrolled ones' probes",
    ]
    if figures["condition"] is not None:
        enrolled = "enrolled as they are" if figures["enrolled_clean"] else "through it too"
        lines.insert(0, f"camera: {figures['condition']} (simulated; first photos {enrolled})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the figures; returns the exit code."""
    import torch

    from tripletface.data.folders import read_pairs
    from tripletface.evaluate import evaluate
    from tripletface.models import load_encoder

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = print_warning
        pairs = None if args.pairs is None else read_pairs(args.pairs, args.data)
        torch.manual_seed(args.seed)  # an untrained encoder's random weights repeat too
        encoder = load_encoder(args.encoder)
        _check_camera(args, encoder)
        dataset, probes = _through_camera(args, _dataset(args, encoder), encoder)
        report = evaluate(
            encoder,
            dataset,
            probes=probes,
            pairs=pairs,
            pairs_count=args.pairs_count,
            seed=args.seed,
            unseen_share=args.unseen_share,
            folds=args.folds,
            progress=sys.stderr.isatty(),
        )
    figures = {
        "data": str(args.data),
        "encoder": str(args.encoder),
        "pairs_file": None if args.pairs is None else str(args.pairs),
        "condition": args.condition,
        "enrolled_clean": args.enroll_clean,
        **report.to_dict(),
    }
    if args.plots is not None:
        figures["plots"] = [str(path) for path in _write_plots(report, args.plots)]
    if args.json:
        print(json.dumps(figures, allow_nan=False))
    else:
        print(_summary(figures, args.folds))
        for path in figures.get("plots", []):
            print(f"wrote {path}")
    return 0


def _dataset(args: argparse.Namespace, encoder):
    """DATA as the encoder sees it: aligned face chips when it takes them, else whole images."""
    import torch

    from tripletface.data.chips import photo_dataset

    def embed(chips):
        batch = torch.from_numpy(chips).permute(0, 3, 1, 2)
        return torch.nn.functional.normalize(encoder.embed(batch), dim=1).numpy()

    data = photo_dataset(
        args.data,
        tuple(encoder.input_size),
        encoder.chip_padding,
        strict=args.strict,
        progress=sys.stderr.isatty(),
        rule=args.face,
        embed=embed,
    )
    print(data.summary(), file=sys.stderr)
    return data


def _check_camera(args: argparse.Namespace, encoder) -> None:
    """InputError unless --condition and --enroll-clean make sense and suit ``encoder``."""
    from tripletface.data.conditions import check_condition
    from tripletface.errors import InputError

    if args.condition is None:
        if args.enroll_clean:
            raise InputError("--enroll-clean needs --condition: the camera to match against")
        return
    check_condition(args.condition)
    if encoder.chip_padding is None:
        raise InputError(
            f"--condition simulates a camera on aligned face chips and {args.encoder} takes "
            "whole images: use an encoder of face chips, such as dlib-resnet"
        )


def _through_camera(
    args: argparse.Namespace, dataset: "Dataset", encoder
) -> tuple["Dataset", "ChipSet | None"]:
    """(data set, probes or None): DATA through the camera (with --enroll-clean, only probes)."""
    from tripletface.data.chips import in_condition

    if args.condition is None:
        return dataset, None
    changed = in_condition(dataset, args.condition, args.seed, encoder.chip_padding)
    return (dataset, changed) if args.enroll_clean else (changed, None)


def _write_plots(report, folder: Path) -> list[Path]:
    """roc.png and distances.png of an evaluation report in folder."""
    from tripletface.metrics import roc_curve
    from tripletface.outputs import output_folder
    from tripletface.plots import plot_distance_histograms, plot_roc

    output_folder(folder, "--plots")
    far, tar, _ = roc_curve(report.distances, report.same)
    return [
        plot_roc(far, tar, folder / "roc.png"),
        plot_distance_histograms(
            report.distances[report.same],
            report.distances[~report.same],
            report.threshold,
            folder / "distances.png",
        ),
    ]
