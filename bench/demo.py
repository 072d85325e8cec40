"""The demo on its default budget: wall and CPU time against the 5-minute budget, and its figures.

Runs ``tripletface.demo.run_demo`` with the defaults (the story goes to stderr), then prints the
machine (torch threads, load average before and after, CPUs), the time (wall, process CPU, each
training's median images/s) and the figures the README quotes: one-shot rank-1 on the unseen
persons for raw pixels, the untrained encoder, random triplets and semi-hard selection, and
semi-hard's lead over random on the same budget. A loaded machine inflates the wall time; the
CPU time and the load average say by how much.

    python bench/demo.py                 # defaults, output in a temporary folder
    python bench/demo.py --out demo-out  # keep the plots and the two runs
    python bench/demo.py --persons 40 --unseen 20 --steps 20 --size 32   # a quick check
    python bench/demo.py --threads 1     # figures on a busy machine (2 threads then spin-wait)
"""

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path

import torch

from tripletface.demo import STRATEGIES, DemoConfig, run_demo

#: The issue's budget for the whole demo on 2 cores, in seconds.
BUDGET = 300.0


def _load() -> str:
    """The 1, 5 and 15-minute load averages."""
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def _images_per_s(run_folder: Path) -> float:
    """Median images/s over the steps of one training (from its metrics.csv)."""
    with (run_folder / "metrics.csv").open(newline="") as stream:
        return statistics.median(float(row["images_per_s"]) for row in csv.DictReader(stream))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="output folder (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    for name in ("persons", "unseen", "steps", "size", "threads"):
        parser.add_argument(f"--{name}", type=int, help="override the default (quick checks)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "demo-out"
        before = _load()
        overrides = {
            name: getattr(args, name)
            for name in ("persons", "unseen", "steps", "size", "threads")
            if getattr(args, name) is not None
        }
        config = DemoConfig(out=out, **overrides)
        figures = run_demo(config, say=partial(print, file=sys.stderr, flush=True))
        after = _load()
        speeds = {s: _images_per_s(out / s) for s in STRATEGIES}
    print(
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} on {figures['threads']} "
        f"threads, {platform.processor() or platform.machine()}; load average {before} before, "
        f"{after} after"
    )
    config = figures["config"]
    print(
        f"demo settings: {config['persons']} training + {config['unseen']} unseen persons x "
        f"{config['images']} pictures at {config['size']} x {config['size']}, {config['steps']} "
        f"steps of {config['p']} x {config['k']} per training"
    )
    print(
        f"time: {figures['seconds']:.0f} s wall ({figures['seconds'] / BUDGET:.2f} of the "
        f"{BUDGET:.0f} s budget), {figures['cpu_seconds']:.0f} s process CPU; training "
        + ", ".join(
            f"{s} {figures[s]['train_seconds']:.0f} s at {speeds[s]:.0f} images/s"
            for s in STRATEGIES
        )
    )
    print("one-shot rank-1 on unseen persons (verification accuracy):")
    for name in ("pixels", "untrained", *STRATEGIES):
        print(
            f"  {name:<10} {100 * figures[name]['rank1']:5.1f}%  "
            f"({100 * figures[name]['verification_accuracy']:.1f}%)"
        )
    lead = figures["semihard"]["rank1"] - figures["random"]["rank1"]
    print(f"semi-hard minus random on the same budget: {100 * lead:+.1f} points rank-1")
    for s in STRATEGIES:
        active = " ".join(f"{100 * a:.1f}%" for a in figures[s]["active_fraction"])
        print(f"  active triplets over training, {s}: {active}")
    recognition = figures["recognition"]
    print(f"recognition show: {recognition['right']} of {len(recognition['answers'])} right")
    if args.json:
        print(json.dumps(figures, allow_nan=False))


if __name__ == "__main__":
    main()
