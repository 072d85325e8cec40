"""``tripletface demo``: train on built-in synthetic faces and recognise unseen persons, offline.

Exit codes: 0 done, 2 bad arguments (one line on stderr saying which and what to do).
"""

import argparse
import json
import sys
from functools import partial
from pathlib import Path

#: DemoConfig fields the command line sets -> (type, what they mean). Unset ones keep
#: DemoConfig's defaults, which the demo prints as it runs; the parser stays free of torch.
_OPTIONS = {
    "persons": (int, "training persons (1000)"),
    "unseen": (int, "unseen persons, never trained on (200)"),
    "images": (int, "pictures per person (10)"),
    "steps": (int, "optimizer steps of each training (600)"),
    "size": (int, "image side in pixels (48)"),
    "seed": (int, "seed of the faces, weights and batches (0)"),
    "out": (Path, "folder for the pictures, the plots and the two runs (demo-out)"),
}


def register(subparsers) -> None:
    """Add the ``demo`` subcommand."""
    p = subparsers.add_parser(
        "demo",
        help="train on synthetic faces, compare triplet selections, recognise unseen persons",
        description="Render synthetic persons, print two baselines (raw pixels, untrained "
        "encoder), train the compact encoder twice on the same budget (random triplets, then "
        "semi-hard selection), print their one-shot rank-1 and verification accuracy on unseen "
        "persons, write plots to --out, and identify new pictures of enrolled persons and of "
        "strangers. About 2 minutes on 2 CPU cores with the defaults.",
    )
    for name, (kind, meaning) in _OPTIONS.items():
        p.add_argument(f"--{name}", type=kind, help=meaning)
    p.add_argument(
        "--json", action="store_true", help="print the figures as one JSON object (text to stderr)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; the story goes to stdout, or to stderr under --json."""
    from tripletface.demo import DemoConfig, run_demo

    given = {name: getattr(args, name) for name in _OPTIONS}
    config = DemoConfig(**{name: value for name, value in given.items() if value is not None})
    say = partial(print, file=sys.stderr if args.json else sys.stdout, flush=True)
    figures = run_demo(config, say=say, progress=sys.stderr.isatty())
    if args.json:
        print(json.dumps(figures, allow_nan=False))
    return 0
