"""The demo on its default budget: wall and CPU time against the 150-second budget, its figures,
and the same against the old demo's settings, interleaved, medians of the rounds.

Each round runs ``tripletface.demo.run_demo`` with the defaults and, unless ``--no-baseline``,
with the settings of the demo before issue 12 (1000 float32 steps at lr 1e-3 without warm-up,
one training after the other in this process), alternating which goes first; the stories go to
stderr. Printed: the machine (CPUs, torch threads, the load average before and after every run),
every run's wall and process CPU time (workers included), the medians, the ratios new / old of
those medians, and the figures the README quotes (medians over the rounds): one-shot rank-1 and
verification accuracy on the unseen persons for raw pixels, the untrained encoder, random
triplets and semi-hard selection, and semi-hard's lead over random on the same budget. A loaded
machine inflates the wall times; the CPU times and the load averages say by how much.

    python bench/demo.py                       # 3 rounds of both
    python bench/demo.py --rounds 1 --no-baseline --out demo-out   # one run, keep its pictures
    python bench/demo.py --persons 40 --unseen 20 --steps 20 --size 32 --rounds 1   # a quick check
    python bench/demo.py --fraction 0.2  # both settings at a fifth of their steps (busy machine)
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from tripletface.demo import STRATEGIES, DemoConfig, run_demo

#: The issue's budget for the whole demo on 2 cores, in seconds.
BUDGET = 150.0
#: The demo's settings before issue 12 (DemoConfig fields).
OLD = {"steps": 1000, "lr": 1e-3, "warmup": 0, "precision": "float32", "parallel": False}
#: What the figures table lists, in order.
ENCODERS = ("pixels", "untrained", *STRATEGIES)


def _load() -> str:
    """The 1, 5 and 15-minute load averages."""
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def _median(runs: list[dict], *keys: str) -> float:
    """Median over runs of runs[i][keys[0]][keys[1]]..."""
    values = []
    for run in runs:
        value = run
        for key in keys:
            value = value[key]
        values.append(value)
    return statistics.median(values)


def _table(name: str, runs: list[dict]) -> None:
    """The figures of one setting: medians over its runs."""
    config = runs[0]["config"]
    order = "both trainings at once in 2 processes" if config["parallel"] else "one, then the other"
    print(
        f"{name}: {config['persons']} training + {config['unseen']} unseen persons x "
        f"{config['images']} pictures at {config['size']} x {config['size']}, {config['steps']} "
        f"steps of {min(config['p'], config['persons'])} x {config['k']} per training, "
        f"lr {config['lr']:g} (warm-up {config['warmup']}), {config['precision']}, "
        f"{order}"
    )
    print(
        f"  time (median of {len(runs)}): {_median(runs, 'seconds'):.0f} s wall "
        f"({_median(runs, 'seconds') / BUDGET:.2f} of the {BUDGET:.0f} s budget), "
        f"{_median(runs, 'cpu_seconds'):.0f} s CPU"
    )
    print("  one-shot rank-1 on the unseen persons (verification accuracy), medians:")
    for encoder in ENCODERS:
        print(
            f"    {encoder:<10} {100 * _median(runs, encoder, 'rank1'):5.1f}%  "
            f"({100 * _median(runs, encoder, 'verification_accuracy'):.1f}%)"
        )
    leads = [run["semihard"]["rank1"] - run["random"]["rank1"] for run in runs]
    print(
        f"  semi-hard minus random on the same budget: {100 * statistics.median(leads):+.1f} "
        f"points rank-1 (runs: {', '.join(f'{100 * lead:+.1f}' for lead in leads)})"
    )
    for strategy in STRATEGIES:
        active = " ".join(f"{100 * a:.1f}%" for a in runs[-1][strategy]["active_fraction"])
        print(f"  active triplets over training, {strategy} (last run): {active}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="output folder of the last run (default: none)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the old demo's settings each round (default: yes)",
    )
    parser.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="run both settings at this fraction of their steps and warm-up (1)",
    )
    parser.add_argument("--json", action="store_true", help="also print every run as JSON")
    for name in ("persons", "unseen", "steps", "size", "threads"):
        parser.add_argument(f"--{name}", type=int, help="override the default (quick checks)")
    args = parser.parse_args()
    overrides = {
        name: getattr(args, name)
        for name in ("persons", "unseen", "steps", "size", "threads")
        if getattr(args, name) is not None
    }
    settings = {"new": DemoConfig(**overrides)}
    if args.baseline:
        settings["old"] = replace(settings["new"], **{**OLD, **overrides})
    if args.fraction != 1:
        settings = {
            name: replace(
                config,
                steps=max(1, round(config.steps * args.fraction)),
                warmup=round(config.warmup * args.fraction),
            )
            for name, config in settings.items()
        }
    results: dict[str, list[dict]] = {name: [] for name in settings}
    print(
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} on "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
        "shared with other jobs: see the load averages"
    )
    say = partial(print, file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            # Alternate the order so that neither setting always meets the same load.
            names = list(settings) if round_ % 2 == 0 else list(settings)[::-1]
            for name in names:
                out = args.out if args.out and round_ == args.rounds - 1 else Path(scratch) / name
                before, started = _load(), time.perf_counter()
                figures = run_demo(replace(settings[name], out=out), say=say)
                results[name].append(figures)
                print(
                    f"round {round_ + 1} {name}: {figures['seconds']:.0f} s wall, "
                    f"{figures['cpu_seconds']:.0f} s CPU, semi-hard rank-1 "
                    f"{100 * figures['semihard']['rank1']:.1f}%, random "
                    f"{100 * figures['random']['rank1']:.1f}%; load average {before} before, "
                    f"{_load()} after ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
    for name, runs in results.items():
        _table(name, runs)
    if "old" in results:
        wall = _median(results["new"], "seconds") / _median(results["old"], "seconds")
        cpu = _median(results["new"], "cpu_seconds") / _median(results["old"], "cpu_seconds")
        print(f"new / old, medians: {wall:.2f} of the wall time, {cpu:.2f} of the CPU time")
    if args.json:
        print(json.dumps(results, allow_nan=False))


if __name__ == "__main__":
    main()
