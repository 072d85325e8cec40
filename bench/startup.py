"""What a one-photo command costs, against face_recognition's CLI on the same photo; and its parts.

1. Commands on one photo of celeba299 (CelebA, Liu et al. 2015; 400 px, colour, in the wild),
   each a fresh process as a user types it, interleaved, medians of ``--rounds``: the known
   person enrolled from another of their photos, then ``tripletface identify PHOTO`` with each
   runtime (onnx-int8, the default when onnxruntime is installed; onnx; torch), ``verify``,
   ``enroll`` (already enrolled: detection and encoding, no write) and ``people``, against
   ``face_recognition KNOWN_DIR PHOTO`` (its CLI, one known photo; the ``pkg_resources`` shim of
   bench/identify_speed.py). Every runtime runs once before timing, so its model is exported
   and cached first, as it is after a user's first command.
2. Where the time of ``tripletface identify PHOTO`` goes, step by step in one fresh process.
3. dlib's HOG detector built by ``dlib.get_frontal_face_detector`` against read from the copy
   tripletface saves (``faces.detect.frontal_face_detector``), in this process.
4. The collector settings of the ``tripletface`` program (``cli.run``) against plain ``cli.main``
   on ``tripletface people --runtime torch`` (which imports torch).
5. Cutting one aligned 150 x 150 chip: ``faces.align.align_face`` against dlib's own
   ``get_face_chip`` on the same landmarks, on scikit-image's astronaut photo.

    python bench/startup.py [--rounds 7] [--data ../shared/data/celeba299] [--person 07201]
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dlib
import numpy as np
import skimage.data
from identify_speed import BIN, SHIM

from tripletface.data.images import person_images
from tripletface.faces.align import align_face
from tripletface.faces.detect import FaceDetector, frontal_face_detector

THROUGH = {
    "cli.run": "from tripletface.cli import run; run()",
    "cli.main": "import sys; from tripletface.cli import main; sys.exit(main())",
}

# Run in a fresh process: the steps of `tripletface identify PHOTO` timed one by one.
STEPS = """import time
start = time.perf_counter()
marks = []
def mark(name):
    marks.append((name, time.perf_counter()))
import sys
import numpy
mark("Python start-up and numpy")
from tripletface.cli import build_parser
args = build_parser().parse_args(["identify", sys.argv[1], "--gallery", sys.argv[2]])
mark("the command line (tripletface.cli)")
from tripletface.recognize import FaceRecognizer
mark("import tripletface.recognize")
rec = FaceRecognizer(args.gallery, read_only=True)
mark("FaceRecognizer: the cached model found by its key file")
rec.runtime.session
mark("onnxruntime imported, session made (saved optimised graph)")
from tripletface.data.images import load_image
image = load_image(args.target)
mark("read the photo")
from tripletface.faces.extract import _detector
detector = _detector("auto")
faces = detector.detect(image)
mark("detection: HOG, then 5 landmarks (the predictor loads: 9 MB)")
boxes, chips = rec.chips(image)
mark("detection and chips again, everything loaded")
embeddings = rec.embed(chips)
mark("encoder, one face")
matches = rec.match(boxes, embeddings)
mark("gallery opened, nearest person")
previous = start
for name, at in marks:
    print(f"{1000 * (at - previous):.1f}\\t{name}")
    previous = at
print("torch imported" if "torch" in sys.modules else "torch not imported")
"""


def seconds(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of a fresh process running ``command`` (exit 0 or 1); CPU time
    (user + system, its child processes included) depends far less on a busy machine."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime


def interleaved(variants: dict[str, tuple[list[str], dict | None]], rounds: int) -> dict:
    """Median (wall, CPU) seconds of each variant, the variants taking turns in every round."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (command, env) in variants.items():
            times[name].append(seconds(command, env))
    return {
        name: tuple(statistics.median(column) for column in zip(*values, strict=True))
        for name, values in times.items()
    }


def commands(work: Path, photo: Path, known: Path, person: str) -> dict:
    """The timed commands: name -> (argv, environment)."""
    gallery = ["--gallery", str(work / "g.db")]
    tf = str(BIN / "tripletface")
    (work / "shim").mkdir()
    (work / "shim" / "pkg_resources.py").write_text(SHIM)
    fr_env = {**os.environ, "PYTHONPATH": str(work / "shim")}
    return {
        "face_recognition KNOWN PHOTO": (
            [str(BIN / "face_recognition"), str(known), str(photo)],
            fr_env,
        ),
        "tripletface identify PHOTO": ([tf, "identify", str(photo), *gallery], None),
        "  --runtime onnx": (
            [tf, "identify", str(photo), "--runtime", "onnx", *gallery],
            None,
        ),
        "  --runtime torch": ([tf, "identify", str(photo), "--runtime", "torch", *gallery], None),
        "tripletface verify PHOTO NAME": ([tf, "verify", str(photo), person, *gallery], None),
        "tripletface enroll NAME PHOTO": ([tf, "enroll", person, str(photo), *gallery], None),
        "tripletface people": ([tf, "people", *gallery], None),
    }


def hog_times(repeats: int = 5) -> tuple[float, float]:
    """(ms to build dlib's HOG detector, ms to read tripletface's saved copy), medians."""
    frontal_face_detector()  # saved, if it was not yet
    built, read = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        dlib.get_frontal_face_detector()
        built.append(time.perf_counter() - start)
        start = time.perf_counter()
        frontal_face_detector()
        read.append(time.perf_counter() - start)
    return 1e3 * statistics.median(built), 1e3 * statistics.median(read)


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
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/celeba299"
    )
    parser.add_argument("--person", default="07201")
    args = parser.parse_args()
    print(
        f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} at start; the machine "
        "is shared, so compare the ratios"
    )

    first, photo = person_images(args.data)[args.person][:2]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "known").mkdir()
        shutil.copy(first, work / "known" / f"{args.person}{first.suffix}")
        tf = str(BIN / "tripletface")
        gallery = ["--gallery", str(work / "g.db")]
        subprocess.run([tf, "enroll", args.person, str(first), *gallery], check=True)
        variants = commands(work, photo, work / "known", args.person)
        for command, env in variants.values():  # exports and caches each runtime's model
            seconds(command, env)
        times = interleaved(variants, args.rounds)
        wall, cpu = times["face_recognition KNOWN PHOTO"]
        print(
            f"\none photo ({photo.name}, person {args.person}): medians of {args.rounds} "
            "interleaved rounds, fresh processes; wall and CPU seconds, and how many times "
            "faster than face_recognition"
        )
        for name, (ours, ours_cpu) in times.items():
            print(
                f"  {name:<30} wall {ours:6.2f} s ({wall / ours:5.2f}x)   "
                f"CPU {ours_cpu:5.2f} s ({cpu / ours_cpu:5.2f}x)"
            )

        steps = subprocess.run(
            [sys.executable, "-c", STEPS, str(photo), str(work / "g.db")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        print("\nwhere `tripletface identify PHOTO` spends its time (one process, ms):")
        print("".join(f"  {line}\n" for line in steps.splitlines()), end="")

        built, read = hog_times()
        print(
            f"\ndlib's HOG detector: built {built:.0f} ms, read from the saved copy {read:.1f} ms"
        )

        people = ["people", "--json", "--runtime", "torch", *gallery]
        through = {
            name: ([sys.executable, "-c", code, *people], None) for name, code in THROUGH.items()
        }
        via = interleaved(through, args.rounds)
    main_s, run_s = via["cli.main"][0], via["cli.run"][0]
    print(
        f"tripletface people --runtime torch (imports torch): {main_s:.2f} s through "
        f"cli.main, {run_s:.2f} s through cli.run ({main_s - run_s:.2f} s less a command)"
    )
    ours, theirs = chip_times()
    print(
        f"one 150 x 150 chip: align_face {ours:.3f} ms, dlib.get_face_chip {theirs:.3f} ms "
        f"(ratio {ours / theirs:.2f}); the chips are equal"
    )
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
