"""End-to-end speed of `tripletface identify` against the face_recognition CLI on the same job.

The job, on ORL (40 persons x 10 real photos): enroll the first photo of each person (file-name
order), then identify the other 360. Both tools run as the command a user types, in fresh
processes, model loading included:

- tripletface: ``tripletface enroll-dir KNOWN`` then ``tripletface identify UNKNOWN --json``
  (detection in 2 worker processes, chips batched through the encoder), with the default runtime
  (onnx-int8 on onnxruntime, no torch) and with ``--runtime torch`` (the PyTorch encoder);
- face_recognition: ``face_recognition --show-distance true KNOWN UNKNOWN`` with its default
  ``--cpus 1`` and with ``--cpus 2`` (it needs ``click``, in the ``bench`` extra). Its
  ``face_recognition_models`` package imports ``pkg_resources``, which setuptools >= 81 no longer
  ships; instead of changing the venv, the bench puts a four-line
  ``pkg_resources.resource_filename`` shim on its PYTHONPATH (in a temporary folder), which is
  all that package uses.

Runs are interleaved and repeated; medians are compared. The answers (the name given to each
photo, or none) are compared file by file, and each tool's accuracy against the folder names is
printed. Target: tripletface at least 3x faster than face_recognition's faster setting.

    python bench/identify_speed.py [--rounds 3] [--data ../shared/data/orl]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tripletface.data.images import person_images

BIN = Path(sys.executable).parent
SHIM = """import importlib.util, os
def resource_filename(package, name):
    spec = importlib.util.find_spec(package)
    return os.path.join(list(spec.submodule_search_locations)[0], name)
"""


def layout(data: Path, work: Path) -> tuple[dict[str, str], Path, Path, Path]:
    """Symlinked folders: (person per unknown file name, known/PERSON/, known_flat/PERSON.png,
    unknown/PERSON_NN.png)."""
    known_dirs, known_flat, unknown = work / "known", work / "known_flat", work / "unknown"
    for folder in (known_dirs, known_flat, unknown):
        folder.mkdir()
    truth = {}
    for person, photos in person_images(data).items():
        (known_dirs / person).mkdir()
        (known_dirs / person / photos[0].name).symlink_to(photos[0].resolve())
        (known_flat / f"{person}{photos[0].suffix}").symlink_to(photos[0].resolve())
        for photo in photos[1:]:
            name = f"{person}_{photo.name}"
            (unknown / name).symlink_to(photo.resolve())
            truth[name] = person
    return truth, known_dirs, known_flat, unknown


def run(
    command: list[str], env: dict | None = None, ok: tuple[int, ...] = (0,)
) -> tuple[float, str]:
    """(wall-clock seconds, stdout) of a command whose exit code must be one of ``ok``."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed, done.stdout


def tripletface_answers(
    known: Path, unknown: Path, gallery: Path, runtime: str = "auto"
) -> tuple[float, dict]:
    gallery.unlink(missing_ok=True)
    options = ["--gallery", str(gallery), "--runtime", runtime]
    enroll_time, _ = run([str(BIN / "tripletface"), "enroll-dir", str(known), *options])
    identify_time, out = run(
        [str(BIN / "tripletface"), "identify", str(unknown), "--json", *options],
        ok=(0, 1),  # 1: nobody recognised, still an answer
    )
    answers = {
        Path(item["file"]).name: (item["faces"][0]["name"] if item["faces"] else None)
        for item in json.loads(out)
    }
    return enroll_time + identify_time, answers


def face_recognition_answers(
    known: Path, unknown: Path, cpus: int, env: dict
) -> tuple[float, dict]:
    command = [str(BIN / "face_recognition"), "--cpus", str(cpus), "--show-distance", "true"]
    elapsed, out = run([*command, str(known), str(unknown)], env)
    best: dict[str, tuple[float, str | None]] = {}
    for line in out.splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) != 3:  # "WARNING: No faces found in KNOWN/...": that person is skipped
            continue
        path, name, distance = parts
        file = Path(path).name
        if name in ("unknown_person", "no_persons_found"):
            best.setdefault(file, (float("inf"), None))
        elif float(distance) < best.get(file, (float("inf"), None))[0]:
            best[file] = (float(distance), name)
    return elapsed, {file: name for file, (_, name) in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/orl"
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        truth, known_dirs, known_flat, unknown = layout(args.data, work)
        (work / "shim").mkdir()
        (work / "shim" / "pkg_resources.py").write_text(SHIM)
        env = {**os.environ, "PYTHONPATH": str(work / "shim")}
        times: dict[str, list[float]] = {
            "tripletface": [],
            "tf --runtime torch": [],
            "fr --cpus 1": [],
            "fr --cpus 2": [],
        }
        answers = {}
        tripletface_answers(known_dirs, unknown, work / "g.db")  # the ONNX model is cached once
        for round_ in range(args.rounds):
            for name, runtime in (("tripletface", "auto"), ("tf --runtime torch", "torch")):
                t, answers[name] = tripletface_answers(known_dirs, unknown, work / "g.db", runtime)
                times[name].append(t)
            for cpus in (1, 2):
                t, answers[f"fr --cpus {cpus}"] = face_recognition_answers(
                    known_flat, unknown, cpus, env
                )
                times[f"fr --cpus {cpus}"].append(t)
            print(
                f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items())
            )

    print(
        f"\n{len(set(truth.values()))} persons enrolled from one photo each, "
        f"{len(truth)} photos identified; load {os.getloadavg()[0]:.2f} (1 min), "
        f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    )
    medians = {k: statistics.median(v) for k, v in times.items()}
    for tool, seconds in medians.items():
        right = sum(answers[tool].get(f) == person for f, person in truth.items())
        print(
            f"{tool:>14}: median {seconds:6.2f} s end to end, "
            f"{right}/{len(truth)} correct ({right / len(truth):.2%})"
        )
    ours = answers["tripletface"]
    for tool in ("tf --runtime torch", "fr --cpus 1", "fr --cpus 2"):
        same = sum(ours.get(f) == answers[tool].get(f) for f in truth)
        print(
            f"tripletface vs {tool}: {medians[tool] / medians['tripletface']:.2f}x faster, "
            f"same answer on {same}/{len(truth)} photos"
        )
    differ = [f for f in truth if ours.get(f) != answers["fr --cpus 1"].get(f)]
    for f in differ[:20]:
        print(
            f"  {f}: truth {truth[f]}, tripletface {ours.get(f)}, face_recognition "
            f"{answers['fr --cpus 1'].get(f)}"
        )


if __name__ == "__main__":
    main()
