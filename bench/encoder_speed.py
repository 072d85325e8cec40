"""Per-face speed of dlib's compute_face_descriptor against the PyTorch rebuild (dlib-resnet)
and its ONNX exports run by onnxruntime (float32 and int8, tripletface.models.runtime).

Both run in the same process on the same aligned chips (the astronaut photo shipped with
scikit-image, aligned by dlib and jittered into distinct chips), interleaved round by round;
the medians over rounds are compared. Prints the thread count, the machine load and the largest
descriptor difference between the two, and between the onnx and torch runtimes' unit-length
embeddings. onnxruntime uses one thread per core (2 here). Wall time is what a user waits;
process CPU time (all threads) is printed too because it is far less sensitive to other programs
on a busy machine.

    python bench/encoder_speed.py [--threads 2] [--batches 1 16 64] [--rounds 7]
"""

import argparse
import os
import statistics
import time

import dlib
import numpy as np
import torch
from skimage.data import astronaut

from tripletface.models.dlib_files import FACE_ENCODER, LANDMARKS_5, dlib_model_path
from tripletface.models.dlib_resnet import DlibResNet
from tripletface.models.runtime import load_runtime


def astronaut_chips(count: int) -> list[np.ndarray]:
    """``count`` distinct 150 x 150 chips: the astronaut's aligned face and random jitters of it."""
    image = astronaut()
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_5)))
    box = max(detector(image, 1), key=lambda rect: rect.area())
    chip = dlib.get_face_chip(image, predictor(image, box), size=150, padding=0.25)
    return [chip, *dlib.jitter_image(chip, num_jitters=count - 1, disturb_colors=True)]


def seconds(run) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call of ``run``."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (dlib uses one)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--dlib-list", type=int, default=8, help="chips per dlib list call")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    chips = astronaut_chips(max([*args.batches, args.dlib_list]))
    reference = dlib.face_recognition_model_v1(str(dlib_model_path(FACE_ENCODER)))
    model = DlibResNet.pretrained()
    batch = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()

    def torch_run(size: int):
        def run():
            with torch.inference_mode():
                model(batch[:size])

        return run

    runs = {
        "dlib, one chip per call": (1, lambda: reference.compute_face_descriptor(chips[0])),
        f"dlib, list of {args.dlib_list}": (
            args.dlib_list,
            lambda: reference.compute_face_descriptor(chips[: args.dlib_list]),
        ),
    }
    onnx = {kind: load_runtime("dlib-resnet", kind) for kind in ("onnx", "onnx-int8")}
    stacked = np.stack(chips)

    def onnx_run(kind: str, size: int):
        return lambda: onnx[kind].embed(stacked[:size])

    for size in args.batches:
        runs[f"torch, batch {size}"] = (size, torch_run(size))
        for kind in onnx:
            runs[f"{kind}, batch {size}"] = (size, onnx_run(kind, size))
    for _, run in runs.values():  # warm-up: oneDNN picks and caches its kernels per shape
        run()

    load_before = os.getloadavg()
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (faces, run) in runs.items():
            elapsed, used = seconds(run)
            wall[name].append(elapsed / faces)
            cpu[name].append(used / faces)
    load_after = os.getloadavg()

    with torch.inference_mode():
        ours = model(batch).numpy()
    theirs = np.array(reference.compute_face_descriptor(chips))
    single = statistics.median(wall["dlib, one chip per call"])
    best = min(statistics.median(times) for name, times in wall.items() if name.startswith("dlib"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, dlib {dlib.__version__}")
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}")
    print(f"max |torch - dlib| over {len(chips)} chips: {np.abs(ours - theirs).max():.2e}")
    unit = torch.nn.functional.normalize(torch.from_numpy(ours), dim=1).numpy()
    print(f"max |onnx - torch|, unit rows: {np.abs(onnx['onnx'].embed(stacked) - unit).max():.2e}")
    print(f"medians of {args.rounds} interleaved rounds, ms per face; speed-up in wall time")
    print(f"{'method':<26} {'wall':>8} {'cpu':>8} {'vs dlib one':>12} {'vs dlib best':>13}")
    for name in runs:
        median = statistics.median(wall[name])
        print(
            f"{name:<26} {1000 * median:>8.2f} {1000 * statistics.median(cpu[name]):>8.2f} "
            f"{single / median:>11.1f}x {best / median:>12.1f}x"
        )


if __name__ == "__main__":
    main()
