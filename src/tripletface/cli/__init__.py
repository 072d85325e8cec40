"""The ``tripletface`` command: one module per group of subcommands, each with ``register()``."""

import argparse
import gc
import importlib
import os
import signal
import sys

from tripletface import __version__
from tripletface.errors import TripletfaceError

# Each module defines register(subparsers), which adds its subcommands and sets args.run.
_MODULES: tuple[str, ...] = (
    "recognize",
    "evaluate",
    "synth",
    "train",
    "demo",
    "serve",
    "gallery",
    "watch",
    "export",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="tripletface",
        description="Face recognition in the FaceNet style: triplet loss, mining, one-shot.",
    )
    parser.add_argument("--version", action="version", version=f"tripletface {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _MODULES:
        importlib.import_module(f"tripletface.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns 0 done, 1 no match or failed verification, 2 bad input."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except TripletfaceError as error:
        print(f"tripletface: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("tripletface: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``tripletface`` program: main() in a process that exits when it returns.

    A command imports torch, a million objects that live until exit: collecting rarely, and not
    over them at exit, saves 0.25 s a command (bench/startup.py).
    """
    gc.set_threshold(50_000, 20, 100)
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (``tripletface people | head``): stop quietly, as a program killed by
        # SIGPIPE would, with stdout pointed at devnull so that the exit's flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 128 + signal.SIGPIPE
    gc.freeze()
    sys.exit(code)
