"""``tripletface synth OUT``: write the built-in synthetic faces as a folder per person."""

import argparse
import time

from tripletface.cli.arguments import at_least


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth`` subcommand."""
    parser = subparsers.add_parser(
        "synth",
        help="write synthetic faces as a folder per person (PNG)",
        description="Render procedurally generated faces, deterministic from --seed, into "
        "OUT/person_<id>/<image>.png. Persons --first-person .. --first-person + --persons - 1: "
        "use a disjoint range (e.g. --first-person 1000) for unseen persons.",
    )
    parser.add_argument("out", metavar="OUT", help="output folder (new or empty)")
    parser.add_argument("--persons", type=at_least(1), default=1000, help="default 1000")
    parser.add_argument("--images", type=at_least(1), default=10, help="per person, default 10")
    parser.add_argument("--size", type=at_least(16), default=64, help="pixels, default 64")
    parser.add_argument("--seed", type=at_least(0), default=0, help="default 0")
    parser.add_argument(
        "--first-person", type=at_least(0), default=0, help="global id of the first person"
    )
    parser.add_argument(
        "--force", action="store_true", help="write into a non-empty OUT, replacing same names"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Render and write the set; prints one summary line."""
    from tripletface.data.synthetic import SyntheticFaces, write_person_folders

    start = time.perf_counter()
    dataset = SyntheticFaces(
        num_persons=args.persons,
        images_per_person=args.images,
        size=args.size,
        seed=args.seed,
        first_person=args.first_person,
    )
    paths = write_person_folders(dataset, args.out, overwrite=args.force)
    seconds = time.perf_counter() - start
    print(
        f"wrote {len(paths)} images of {args.persons} persons "
        f"(ids {args.first_person}-{args.first_person + args.persons - 1}, "
        f"{args.size}x{args.size}, seed {args.seed}) to {args.out} in {seconds:.1f} s"
    )
    return 0
