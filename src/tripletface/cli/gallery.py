"""Gallery subcommands: ``tripletface gallery copy SRC DST`` between any two backends."""

import sys

from tqdm import tqdm


def register(subparsers) -> None:
    """Add the gallery subcommands."""
    gallery = subparsers.add_parser("gallery", help="copy galleries between files and databases")
    commands = gallery.add_subparsers(dest="gallery_command", required=True, metavar="COMMAND")
    help = (
        "copy a gallery (file or postgresql://USER@HOST[:PORT]/DB) to another, checked by "
        "counts and encoder fingerprint; an interrupted copy resumes where it stopped"
    )
    copy = commands.add_parser("copy", help=help, description=help)
    copy.add_argument("source", metavar="SRC")
    copy.add_argument("destination", metavar="DST")
    copy.set_defaults(run=copy_command)


def copy_command(args) -> int:
    from tripletface.gallery import gallery_location
    from tripletface.gallery.copy import copy_gallery

    with tqdm(desc="copy", unit="face", file=sys.stderr, disable=None) as bar:

        def step(faces: int, total: int) -> None:
            bar.total = total
            bar.update(faces)

        done = copy_gallery(gallery_location(args.source), gallery_location(args.destination), step)
    print(
        f"copied {done.people} people ({done.faces} faces) from {args.source} to "
        f"{args.destination}; {done.skipped} were already there"
    )
    return 0
