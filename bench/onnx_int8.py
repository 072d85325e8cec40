"""dlib-resnet in int8 against float32 under onnxruntime (and torch): speed per face, accuracy.

Chips: the largest face of every photo of ORL (40 persons x 10, grayscale) and celeba299 (299
persons, 6300 colour photos in the wild; CelebA, Liu et al. 2015), cut in dlib's convention by the
recognizer's chip maker (detector "auto" on ORL, "hog" on celeba299 to bound the time), detected
in 2 processes and cached in the temporary folder. Each runtime embeds the same chips:

- torch: the PyTorch rebuild (``--runtime torch``), timed for reference; its embeddings equal
  onnx's within 1e-4 (printed on ORL), so its accuracy is onnx's;
- onnx: the exported float32 model (``--runtime onnx``);
- onnx-int8: static int8 quantisation calibrated on 32 synthetic faces, what ``--runtime
  onnx-int8`` (the default since this bench) builds: the user's machine has no photos to
  calibrate on;
- int8, calibrated on 32 celeba299 chips (every 200th), to show what real calibration changes.

Figures per data set: one-shot rank-1 (first photo of each person enrolled, the others
identified), verification accuracy (10-fold, up to 3000 same-person and 3000 different-person
pairs, seed 0), TAR at FAR 1e-3 (every same-person pair, up to 300,000 different-person pairs,
seed 1) and how far int8 moves embeddings from float32 (squared distance between the two
embeddings of a chip; dlib-resnet's threshold is 0.1339). Speed: ms per face in batches of 64
on 2 threads, runtimes interleaved, medians of the rounds.

    python bench/onnx_int8.py [--rounds 7] [--data ../shared/data]
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from tripletface import metrics
from tripletface.data.folders import sample_pairs
from tripletface.data.images import person_images
from tripletface.faces.extract import ChipMaker, FaceStream
from tripletface.models.quantize import quantize_int8
from tripletface.models.runtime import OnnxRuntime, Runtime, cached_model, load_runtime

SETS = {"orl": "auto", "celeba299": "hog"}


def chips_of(root: Path, detector: str) -> tuple[np.ndarray, np.ndarray]:
    """(N x 150 x 150 x 3 chips of the largest face per photo, N person labels), cached."""
    cache = Path(tempfile.gettempdir()) / f"tripletface-bench-{root.name}-{detector}.npz"
    if cache.is_file():
        saved = np.load(cache)
        return saved["chips"], saved["labels"]
    files, persons = [], []
    for person, paths in enumerate(dict(sorted(person_images(root).items())).values()):
        files += [str(p) for p in paths]
        persons += [person] * len(paths)
    label_of = dict(zip(files, persons, strict=True))
    chips, labels = [], []
    start = time.perf_counter()
    with FaceStream(ChipMaker.for_encoder(detector, 150, 0.25), files, workers=2) as stream:
        for item in stream:
            if item.error is None and item.boxes:
                chips.append(item.chips[0])  # faces come largest first
                labels.append(label_of[item.path])
    print(
        f"{root.name}: {len(chips)} of {len(files)} photos with a face ({detector}, "
        f"{time.perf_counter() - start:.0f} s)"
    )
    chips, labels = np.stack(chips), np.array(labels)
    np.savez(cache, chips=chips, labels=labels)
    return chips, labels


def embed(runtime: Runtime, chips: np.ndarray) -> np.ndarray:
    return np.concatenate([runtime.embed(chips[i : i + 256]) for i in range(0, len(chips), 256)])


def figures(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """rank-1, 10-fold verification accuracy and TAR at FAR 1e-3 (all in %)."""
    first = np.unique(labels, return_index=True)[1]
    probes = np.setdiff1d(np.arange(len(labels)), first)
    rank1 = metrics.one_shot_identification(
        embeddings[first], labels[first], embeddings[probes], labels[probes], ks=(1,)
    )["rank1"]
    persons = SimpleNamespace(labels=labels.tolist())

    def distances(pairs):
        a = np.array([p.first for p in pairs])
        b = np.array([p.second for p in pairs])
        d = ((embeddings[a].astype(np.float64) - embeddings[b]) ** 2).sum(1)
        return d, np.array([p.same for p in pairs])

    accuracy, _, _ = metrics.verification_accuracy_kfold(
        *distances(sample_pairs(persons, 3000, 3000, 0)), 10, 0
    )
    tar, _ = metrics.val_at_far(*distances(sample_pairs(persons, 10**6, 300_000, 1)), 1e-3)
    return {"rank-1": 100 * rank1, "verification": 100 * accuracy, "TAR@FAR1e-3": 100 * tar}


def speeds(runtimes: dict[str, Runtime], chips: np.ndarray, rounds: int) -> dict[str, float]:
    """Median ms per face in batches of 64, the runtimes taking turns in every round."""
    batch = chips[:64]
    for runtime in runtimes.values():
        runtime.embed(batch)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(rounds):
        for name, runtime in runtimes.items():
            start = time.perf_counter()
            runtime.embed(batch)
            times[name].append((time.perf_counter() - start) / len(batch) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data"
    )
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(
        f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} at start, "
        f"torch threads {torch.get_num_threads()}; the machine is shared"
    )

    data = {name: chips_of(args.data / name, detector) for name, detector in SETS.items()}
    runtimes = {kind: load_runtime("dlib-resnet", kind) for kind in ("torch", "onnx", "onnx-int8")}
    float_model, _ = cached_model("dlib-resnet")
    real = Path(tempfile.mkdtemp()) / "int8-celeba.onnx"
    quantize_int8(float_model, real, data["celeba299"][0][::200][:32])
    runtimes["int8, real calibration"] = OnnxRuntime(real, "onnx-int8")

    speed = speeds(runtimes, data["celeba299"][0], args.rounds)
    print(
        f"\nms per face, batches of 64, medians of {args.rounds} interleaved rounds "
        f"(load {os.getloadavg()[0]:.2f})"
    )
    for name, ms in speed.items():
        print(f"  {name:<24} {ms:6.2f} ms  ({speed['onnx'] / ms:.2f}x onnx float32)")

    orl = data["orl"][0]
    gap = np.abs(embed(runtimes["torch"], orl) - embed(runtimes["onnx"], orl)).max()
    print(f"\nmax |torch - onnx| over the {len(orl)} ORL chips: {gap:.1e}")
    del runtimes["torch"]
    for set_name, (chips, labels) in data.items():
        print(f"\n{set_name}: {len(chips)} faces of {len(np.unique(labels))} persons")
        print(f"  {'runtime':<24} {'rank-1':>8} {'verif.':>8} {'TAR@1e-3':>9} {'moved':>9}")
        reference = embed(runtimes["onnx"], chips)
        for name, runtime in runtimes.items():
            embeddings = reference if name == "onnx" else embed(runtime, chips)
            moved = ((embeddings.astype(np.float64) - reference) ** 2).sum(1)
            f = figures(embeddings, labels)
            print(
                f"  {name:<24} {f['rank-1']:7.2f}% {f['verification']:7.2f}% "
                f"{f['TAR@FAR1e-3']:8.2f}% {np.median(moved):9.1e}"
                f"  (max {moved.max():.1e})"
            )
    print(
        f"\nload average {os.getloadavg()[0]:.2f} at end; 'moved': median squared distance "
        "between a chip's embedding and its float32 onnx one"
    )


if __name__ == "__main__":
    main()
