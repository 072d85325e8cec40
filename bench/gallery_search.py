"""Identify latency per probe in large galleries: tripletface's search against face_distance.

Baseline: face_recognition's ``face_distance(known, probe)`` (``np.linalg.norm(known - probe,
axis=1)``) over the whole gallery, one probe at a time, then argmin: what its users do today.
The gallery is handed to it as one float64 array (face_recognition's encodings are float64 arrays;
a Python list of them would be slower still). Its ``face_recognition_models`` imports
``pkg_resources``, gone from setuptools >= 81, so a two-line ``resource_filename`` stands in for
it; if face_recognition still cannot be imported, the same numpy expression is timed and the
output says so.

Ours, one probe at a time too: ``ExactIndex`` (one matrix product, exact) and ``FaissIndex``
(IVF; built once, its build time printed). Embeddings are random unit-length 128-d vectors
scattered around person centres (10 faces per person, seeded) so that the nearest neighbour is a
meaningful question; probes are new faces of enrolled persons. Search only: nothing is stored in
SQLite. Latencies are medians over probes, the three methods interleaved probe by probe; top-1
agreement with the baseline is counted on the timed probes, and FAISS against exact search (which
is exact) on many more.

    python bench/gallery_search.py [--quick] [--sizes 10000 100000 1000000] [--threads 1]
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time
import types

# BLAS and OpenMP read their thread counts when numpy and faiss load: parse --threads first.
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
parser.add_argument("--quick", action="store_true", help="10k and 100k only, fewer probes")
parser.add_argument("--probes", type=int, default=40, help="timed probes per size")
parser.add_argument("--agreement-probes", type=int, default=2000)
# One probe at a time is too little work to share: extra BLAS/OpenMP threads only wait on each
# other, badly so on a loaded machine (measured: 23 ms instead of 0.2 ms for 10k exact).
parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (default 1)")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = str(args.threads)

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from tripletface.search import ExactIndex, FaissIndex  # noqa: E402

DIM = 128
FACES_PER_PERSON = 10
# Per-coordinate spread around a person's centre: two faces of one person end up ~0.25 apart
# (squared, unit length), near dlib-resnet's threshold; two persons ~2 apart.
SPREAD = 0.04


def baseline():
    """(face_distance, where it comes from)."""
    if importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, name: str) -> str:
            return os.path.join(
                next(iter(importlib.util.find_spec(package).submodule_search_locations)), name
            )

        shim.resource_filename = resource_filename
        sys.modules["pkg_resources"] = shim
    try:
        from face_recognition.api import face_distance

        return face_distance, "face_recognition.api.face_distance"
    except (ImportError, SystemExit) as error:

        def face_distance(face_encodings, face_to_compare):
            return np.linalg.norm(face_encodings - face_to_compare, axis=1)

        return face_distance, f"its numpy expression, reproduced (import failed: {error!r})"


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def faces(size: int, probes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(size x 128 enrolled faces, probes x 128 new faces of enrolled persons), unit length."""
    centres = unit(rng.standard_normal((size // FACES_PER_PERSON, DIM), dtype=np.float32))
    enrolled = np.repeat(centres, FACES_PER_PERSON, axis=0)
    enrolled += SPREAD * rng.standard_normal(enrolled.shape, dtype=np.float32)
    chosen = centres[rng.integers(0, len(centres), probes)]
    return unit(enrolled), unit(
        chosen + SPREAD * rng.standard_normal(chosen.shape, dtype=np.float32)
    )


def timed(run) -> tuple[float, object]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def measure(size: int, probes: int, agreement_probes: int, face_distance, rng) -> dict:
    """Median ms per probe and top-1 agreements of the three methods at one gallery size."""
    gallery, queries = faces(size, max(probes, agreement_probes), rng)
    known = gallery.astype(np.float64)
    exact = ExactIndex(gallery)
    build, index = timed(lambda: FaissIndex(gallery))
    methods = {
        "face_distance": lambda q: int(np.argmin(face_distance(known, q.astype(np.float64)))),
        "exact": lambda q: int(exact.search(q[None], 1)[1][0, 0]),
        "faiss": lambda q: int(index.search(q[None], 1)[1][0, 0]),
    }
    times = {name: [] for name in methods}
    answers = {name: [] for name in methods}
    for number, probe in enumerate(queries[:probes]):
        names = list(methods)
        # Rotate who goes first, so that caches and load spikes fall on each method alike.
        for name in names[number % 3 :] + names[: number % 3]:
            seconds, answer = timed(lambda: methods[name](probe))  # noqa: B023
            times[name].append(seconds)
            answers[name].append(answer)
    batch_seconds, (_, exact_rows) = timed(lambda: exact.search(queries, 1))
    _, (_, faiss_rows) = timed(lambda: index.search(queries, 1))
    truth = np.asarray(answers["face_distance"])
    return {
        "size": size,
        "build": build,
        **{f"{name} ms": 1e3 * statistics.median(t) for name, t in times.items()},
        "exact agree": np.mean(np.asarray(answers["exact"]) == truth),
        "faiss agree": np.mean(np.asarray(answers["faiss"]) == truth),
        "faiss vs exact": np.mean(faiss_rows[:, 0] == exact_rows[:, 0]),
        "exact batched ms": 1e3 * batch_seconds / len(queries),
    }


def main() -> None:
    sizes = [10_000, 100_000] if args.quick else args.sizes
    probes = min(args.probes, 15) if args.quick else args.probes
    agreement = min(args.agreement_probes, 500) if args.quick else args.agreement_probes
    face_distance, source = baseline()
    print(f"baseline: {source}, float64 gallery, one probe at a time")
    print(
        f"threads: faiss/OpenMP {faiss.omp_get_max_threads()}, OPENBLAS_NUM_THREADS="
        f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, cpus {os.cpu_count()}; "
        f"load before {os.getloadavg()}"
    )
    print(
        f"{'gallery':>9} {'faiss build':>11} {'face_distance':>13} {'exact':>16} {'faiss':>16}"
        f" {'top-1 agree exact/faiss':>23} {'faiss vs exact':>20} {'exact batched':>13}"
    )
    rng = np.random.default_rng(args.seed)
    for size in sizes:
        r = measure(size, probes, agreement, face_distance, rng)
        base = r["face_distance ms"]
        print(
            f"{size:>9,} {r['build']:>10.1f}s {base:>11.2f}ms"
            f" {r['exact ms']:>7.2f}ms {base / r['exact ms']:>5.0f}x"
            f" {r['faiss ms']:>7.3f}ms {base / r['faiss ms']:>5.0f}x"
            f" {r['exact agree']:>11.1%} / {r['faiss agree']:.1%} ({probes} probes)"
            f" {r['faiss vs exact']:>8.2%} ({agreement})"
            f" {r['exact batched ms']:>10.3f}ms",
            flush=True,
        )
    print(f"load after {os.getloadavg()}; latencies are medians over {probes} probes per size")


if __name__ == "__main__":
    main()
