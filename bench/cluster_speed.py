"""tripletface cluster's maths at photo-library sizes: the tiled clustering against the old brute
force (tests/cluster_reference.py: 1024 rows x N float64 distances at a time, every link kept,
then joined one at a time in Python).

Faces: random unit-length 128-d rows scattered around person centres (seeded): 20 photos a
person, and one person (a family member) in a tenth of them; squared distance threshold 0.1413
(dlib-resnet's default), which links most photos of a person. Times are medians over --repeats
runs, old and new interleaved run by run in this one process; peak memory is what Python and
numpy allocated (tracemalloc), measured in a run of its own; the labels of both are checked equal.

    python bench/cluster_speed.py [--sizes 1000 3000 10000] [--repeats 3]
"""

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import cluster_reference

from tripletface.clustering import cluster_embeddings

THRESHOLD = 0.1413


def library(n: int, seed: int = 0) -> np.ndarray:
    """n unit 128-d faces: a tenth of one person, the rest 20 photos a person."""
    rng = np.random.default_rng(seed)
    family = n // 10
    persons = np.concatenate([np.zeros(family, int), 1 + np.arange(n - family) // 20])
    centres = rng.normal(size=(persons.max() + 1, 128))
    x = centres[persons] + rng.normal(scale=0.02, size=(n, 128))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[rng.permutation(n)]


def seconds(cluster: Callable, x: np.ndarray) -> float:
    """Wall-clock seconds of one clustering."""
    start = time.perf_counter()
    cluster(x, THRESHOLD)
    return time.perf_counter() - start


def main() -> None:
    """Print one line per size: median times, their ratio, peak memory, links and clusters."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{'faces':>6} {'links':>9} {'clusters':>8} {'old s':>8} {'new s':>8} {'new/old':>8}"
        f" {'old MiB':>8} {'new MiB':>8}"
    )
    for n in args.sizes:
        x = library(n)
        old_labels, old_peak = cluster_reference.peak_memory(
            cluster_reference.cluster_embeddings, x, THRESHOLD
        )
        new_labels, new_peak = cluster_reference.peak_memory(cluster_embeddings, x, THRESHOLD)
        if not np.array_equal(old_labels, new_labels):
            raise SystemExit(f"{n} faces: the clusterings differ")
        old, new = [], []
        for _ in range(args.repeats):
            old.append(seconds(cluster_reference.cluster_embeddings, x))
            new.append(seconds(cluster_embeddings, x))
        links = len(cluster_reference.threshold_edges(x, THRESHOLD))
        old_s, new_s = statistics.median(old), statistics.median(new)
        print(
            f"{n:>6} {links:>9} {new_labels.max() + 1:>8} {old_s:>8.3f} {new_s:>8.3f}"
            f" {new_s / old_s:>8.3f} {old_peak / 2**20:>8.1f} {new_peak / 2**20:>8.1f}"
        )


if __name__ == "__main__":
    main()
