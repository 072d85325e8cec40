"""What an atomic write of a small PNG costs against a plain write of it, by the folder's size.

``tripletface.cache.write_atomic`` (as ``watch --snapshots`` calls it: no fsync, never replacing)
writes a temporary beside the file, moves it into place, then sweeps the temporaries that
writers killed with ``kill -9`` left there. "swept every write" is the sweep as it was before,
listing the folder after every write (``remove_stale_temporaries`` called each time; its listing
was a ``Path.glob`` then, slower still); "now" is ``write_atomic`` as it is, which sweeps a folder
of n files once every n // 1000 + 1 writes. Each figure is the median, over interleaved rounds,
of the mean time of a write in a round; the ratio is to the plain write in the same folder.

    python bench/atomic_write.py [--sizes 10 1000 20000] [--rounds 9] [--writes 20]
"""

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from tripletface.cache import remove_stale_temporaries, write_atomic


def small_png() -> bytes:
    """A 64 x 64 RGB PNG of noise, about the size of a face snapshot."""
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def plain(path: Path, data: bytes) -> None:
    """Open, write and close: no temporary, no sweep."""
    path.write_bytes(data)


def atomic(path: Path, data: bytes) -> None:
    """write_atomic as watch's snapshots call it."""
    write_atomic(path, lambda stream: stream.write(data), sync=False, replace=False)


def swept_every_write(path: Path, data: bytes) -> None:
    """write_atomic followed by a sweep that lists the folder: the cost of every write before."""
    atomic(path, data)
    remove_stale_temporaries(path)


WAYS: dict[str, Callable[[Path, bytes], None]] = {
    "plain": plain,
    "swept every write": swept_every_write,
    "now": atomic,
}


def seconds_per_write(
    way: Callable[[Path, bytes], None], folder: Path, data: bytes, n: int
) -> float:
    """Mean seconds of one of ``n`` writes of ``data`` to new names in ``folder`` (then removed,
    so that the folder keeps its size)."""
    paths = [folder / f"new-{time.perf_counter_ns()}-{i}.png" for i in range(n)]
    start = time.perf_counter()
    for path in paths:
        way(path, data)
    elapsed = time.perf_counter() - start
    for path in paths:
        path.unlink()
    return elapsed / n


def main() -> None:
    """Print a line per folder size: the median time of a write each way, and its ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 20000])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--writes", type=int, default=20, help="writes timed per round and way")
    args = parser.parse_args()
    data = small_png()
    print(f"a {len(data)}-byte PNG, {args.writes} writes a round, median of {args.rounds} rounds")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            for i in range(size):
                (folder / f"snapshot-{i:06d}.png").write_bytes(data)
            times: dict[str, list[float]] = {way: [] for way in WAYS}
            for _ in range(args.rounds):  # interleaved: a slower moment costs every way alike
                for way, write in WAYS.items():
                    times[way].append(seconds_per_write(write, folder, data, args.writes))
            median = {way: statistics.median(values) for way, values in times.items()}
            figures = ", ".join(
                f"{way} {median[way] * 1e6:.0f} us ({median[way] / median['plain']:.1f}x)"
                for way in WAYS
            )
            print(f"{size:>6} files: {figures}")


if __name__ == "__main__":
    main()
