"""What a tripletface command pays before and beside its real work: start-up and chip cutting.

1. The collector settings of the ``tripletface`` program (``cli.run``): the same command,
   ``tripletface people --json`` on a gallery of one person (it loads torch and the dlib-resnet
   encoder),
   started through ``cli.run`` and through plain ``cli.main``, interleaved, medians of several
   fresh processes. ``import torch`` alone is timed the same two ways.
2. Cutting one aligned 150 x 150 chip: ``faces.align.align_face`` (rectangle fitted in numpy,
   pixels sampled by dlib's ``extract_image_chip``) against dlib's own ``get_face_chip`` on the
   same landmarks, on scikit-image's astronaut photo.

    python bench/startup.py [--rounds 7]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dlib
import numpy as np
import skimage.data

from tripletface.faces.align import align_face
from tripletface.faces.detect import FaceDetector

LAZY_GC = "import gc; gc.set_threshold(50_000, 20, 100); "
IMPORT_TORCH = "import torch"
THROUGH = {
    "cli.run": "from tripletface.cli import run; run()",
    "cli.main": "import sys; from tripletface.cli import main; sys.exit(main())",
}


def seconds(code: str, args: list[str]) -> float:
    """Wall-clock seconds of a fresh ``python -c code args``."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True)
    return time.perf_counter() - start


def interleaved(variants: dict[str, tuple[str, list[str]]], rounds: int) -> dict[str, float]:
    """Median seconds of each variant, the variants taking turns in every round."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (code, args) in variants.items():
            times[name].append(seconds(code, args))
    return {name: statistics.median(values) for name, values in times.items()}


def chip_times(repeats: int = 200) -> tuple[float, float]:
    """(ms per chip of align_face, ms per chip of dlib.get_face_chip) on the same landmarks."""
    image = skimage.data.astronaut()
    face = FaceDetector("hog", upsample=0).detect(image)[0]
    parts = [dlib.point(int(x), int(y)) for x, y in face.landmarks]
    shape = dlib.full_object_detection(dlib.rectangle(*face.box), parts)
    if not np.array_equal(align_face(image, face.landmarks), dlib.get_face_chip(image, shape)):
        raise SystemExit("align_face and dlib.get_face_chip disagree: fix that first")
    ours, theirs = [], []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(repeats):
            align_face(image, face.landmarks)
        ours.append((time.perf_counter() - start) / repeats * 1e3)
        start = time.perf_counter()
        for _ in range(repeats):
            dlib.get_face_chip(image, shape, size=150, padding=0.25)
        theirs.append((time.perf_counter() - start) / repeats * 1e3)
    return statistics.median(ours), statistics.median(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} at start")

    imports = interleaved(
        {"default": (IMPORT_TORCH, []), "lazy": (LAZY_GC + IMPORT_TORCH + "; gc.freeze()", [])},
        args.rounds,
    )
    print(
        f"import torch: {imports['default']:.2f} s with Python's collector settings, "
        f"{imports['lazy']:.2f} s with cli.run's ({imports['default'] - imports['lazy']:.2f} s "
        "less)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        from tripletface.recognize import FaceRecognizer

        gallery = Path(tmp) / "one.db"
        rec = FaceRecognizer(gallery, detector="hog")
        rec.enroll("eileen", skimage.data.astronaut(), largest=True)
        command = ["people", "--json", "--gallery", str(gallery)]
        commands = interleaved(
            {name: (code, command) for name, code in THROUGH.items()}, args.rounds
        )
    saved = commands["cli.main"] - commands["cli.run"]
    print(
        f"tripletface people (loads torch and dlib-resnet): {commands['cli.main']:.2f} s through "
        f"cli.main, {commands['cli.run']:.2f} s through cli.run ({saved:.2f} s less a command)"
    )

    ours, theirs = chip_times()
    print(
        f"one 150 x 150 chip: align_face {ours:.3f} ms, dlib.get_face_chip {theirs:.3f} ms "
        f"(ratio {ours / theirs:.2f}); the chips are equal"
    )
    print(f"load average {os.getloadavg()[0]:.2f} at end; medians of {args.rounds} rounds")


if __name__ == "__main__":
    main()
