"""Pretrained dlib ResNet on ORL (40 persons x 10 photos): one-shot rank-1, 10-fold verification.

ORL photos are 92 x 112 grayscale portraits whose faces nearly fill the frame, so detectors miss
some of them. Faces are found by ``FaceDetector("auto")``, the recognizer's default: HOG on the
photo doubled, HOG on it quadrupled, then the CNN detector; a photo where all miss takes the whole
photo as the face box (landmarks still predicted inside it). The bench prints how many photos
each step served. Faces are
cut into dlib's 150 x 150 chips (tripletface.faces.align) and encoded by the PyTorch
``dlib-resnet`` encoder when it is registered, by dlib's own ``compute_face_descriptor`` otherwise.

Protocol: enroll each person's first image (file-name order) and identify the other 9 (rank-1 over
360 probes); verification accuracy by 10-fold cross-validation of the threshold (LFW protocol) on
all 1800 same-person pairs and as many random different-person pairs (seed 0), squared Euclidean
distance. Two comparisons: the same chips and encoder with face_recognition's fallback (the whole
photo as soon as HOG on the doubled photo misses), and face_recognition's own pipeline.

    python bench/orl_pretrained.py [--data ../shared/data/orl] [--no-face-recognition]
"""

import argparse
import importlib.util
import itertools
import os
import sys
import time
import types
from collections import Counter
from pathlib import Path

import numpy as np

from tripletface.data.images import load_image, person_images
from tripletface.faces.align import face_chips
from tripletface.faces.detect import Face, FaceDetector
from tripletface.metrics import one_shot_identification, verification_accuracy_kfold

STEPS = ("hog x2", "hog x4", "cnn x2", "whole photo")
DETECTOR = FaceDetector("auto", upsample=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/orl"
    )
    parser.add_argument("--no-face-recognition", action="store_true")
    args = parser.parse_args()
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} at start")

    paths, labels = _orl_files(args.data)
    images = [load_image(path) for path in paths]
    print(f"{len(set(labels))} persons, {len(paths)} photos from {args.data}")

    start = time.perf_counter()
    found = [_find_face(image) for image in images]
    steps = Counter(step for step, _ in found)
    print(f"detection: {time.perf_counter() - start:.1f} s; photos per step: ", end="")
    print(", ".join(f"{step} {steps[step]}" for step in STEPS))
    chips = np.concatenate(
        [face_chips(img, [face]) for img, (_, face) in zip(images, found, strict=True)]
    )
    difference = _difference_from_dlib(images, [face for _, face in found], chips)
    print(f"chips against dlib.get_face_chip: mean absolute difference {difference:.4f} (0-255)")

    start = time.perf_counter()
    descriptors, encoder_name = _encode(chips)
    print(f"encoding ({encoder_name}): {time.perf_counter() - start:.1f} s")
    _report("tripletface", descriptors, labels)

    # Ablation: face_recognition's fallback (whole photo as soon as HOG x2 misses) on our chips.
    missed = [i for i, (step, _) in enumerate(found) if step != "hog x2"]
    whole = [_whole_photo(images[i]) for i in missed]
    fallback = descriptors.copy()
    if missed:
        fallback[missed] = _encode(
            np.concatenate([face_chips(images[i], [f]) for i, f in zip(missed, whole, strict=True)])
        )[0]
    _report("tripletface, whole photo when HOG x2 misses", fallback, labels)

    if not args.no_face_recognition:
        face_recognition = _import_face_recognition()
        if face_recognition is not None:
            start = time.perf_counter()
            theirs = np.stack([_face_recognition_descriptor(face_recognition, i) for i in images])
            print(f"face_recognition pipeline: {time.perf_counter() - start:.1f} s")
            _report("face_recognition", theirs, labels)
    print(f"load average {os.getloadavg()[0]:.2f} at end")


def _orl_files(root: Path) -> tuple[list[Path], list[int]]:
    """Image paths grouped by person folder (sorted), file-name order within each; labels."""
    persons = person_images(root)
    paths = [path for files in persons.values() for path in files]
    labels = [label for label, files in enumerate(persons.values()) for _ in files]
    return paths, labels


def _find_face(image: np.ndarray) -> tuple[str, Face]:
    """(step that found it, largest face); the whole photo when the detectors all miss."""
    faces = DETECTOR.detect(image)
    if faces:
        return f"{faces[0].detector} x{faces[0].scale:g}", faces[0]
    return "whole photo", _whole_photo(image)


def _whole_photo(image: np.ndarray) -> Face:
    """The whole photo taken as the face box, landmarks predicted inside it."""
    height, width = image.shape[:2]
    return DETECTOR.face_in_box(image, (0, 0, width, height))


def _difference_from_dlib(images: list[np.ndarray], faces: list[Face], chips: np.ndarray) -> float:
    """Mean absolute pixel difference between our chips and dlib's own for the same landmarks."""
    import dlib

    total = 0.0
    for image, face, chip in zip(images, faces, chips, strict=True):
        parts = [dlib.point(int(x), int(y)) for x, y in face.landmarks]
        shape = dlib.full_object_detection(dlib.rectangle(*face.box), parts)
        reference = dlib.get_face_chip(image, shape, size=150, padding=0.25)
        total += np.abs(reference.astype(int) - chip.astype(int)).mean()
    return total / len(chips)


def _encode(chips: np.ndarray) -> tuple[np.ndarray, str]:
    """N x 128 raw descriptors of 150 x 150 chips, and the name of what computed them."""
    from tripletface.models import list_encoders

    if "dlib-resnet" in list_encoders():
        import torch

        from tripletface.models import load_encoder

        encoder = load_encoder("dlib-resnet").eval()
        batch = torch.from_numpy(chips).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            out = torch.cat([encoder(part) for part in batch.split(50)])
        return out.numpy().astype(
            np.float64
        ), f"PyTorch dlib-resnet, {torch.get_num_threads()} threads"
    import dlib

    from tripletface.models.dlib_files import FACE_ENCODER, dlib_model_path

    model = dlib.face_recognition_model_v1(str(dlib_model_path(FACE_ENCODER)))
    return np.array(model.compute_face_descriptor(list(chips))), "dlib compute_face_descriptor"


def _report(name: str, descriptors: np.ndarray, labels: list[int]) -> None:
    """Print rank-1 (first photo of each person enrolled) and 10-fold verification accuracy."""
    labels_array = np.asarray(labels)
    first = np.zeros(len(labels), dtype=bool)
    first[np.unique(labels_array, return_index=True)[1]] = True
    rank = one_shot_identification(
        descriptors[first], labels_array[first], descriptors[~first], labels_array[~first], (1,)
    )
    left, right, same = _pairs(labels_array)
    distances = ((descriptors[left] - descriptors[right]) ** 2).sum(axis=1)
    mean, std, _ = verification_accuracy_kfold(distances, same, folds=10, seed=0)
    misses = round((1 - rank["rank1"]) * int((~first).sum()))
    print(
        f"{name}: rank-1 {100 * rank['rank1']:.2f}% ({misses} of {(~first).sum()} probes missed); "
        f"verification {100 * mean:.2f}% +- {100 * std:.2f} (10-fold, {same.sum()} same and "
        f"{(~same).sum()} different pairs)"
    )


def _pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All same-person pairs plus as many distinct random different-person pairs (seed 0)."""
    everything = np.array(list(itertools.combinations(range(len(labels)), 2)))
    same = labels[everything[:, 0]] == labels[everything[:, 1]]
    different = everything[~same]
    chosen = np.random.default_rng(0).choice(len(different), size=same.sum(), replace=False)
    pairs = np.concatenate([everything[same], different[np.sort(chosen)]])
    is_same = np.concatenate([np.ones(same.sum(), bool), np.zeros(same.sum(), bool)])
    return pairs[:, 0], pairs[:, 1], is_same


def _import_face_recognition() -> types.ModuleType | None:
    """face_recognition, or None with a printed note when it cannot be imported here."""
    if importlib.util.find_spec("face_recognition") is None:
        print("face_recognition comparison skipped: the package is not installed")
        return None
    if importlib.util.find_spec("pkg_resources") is None:
        # face_recognition_models reads its paths through pkg_resources, gone from setuptools
        # >= 81; this stand-in answers the one call it makes, from the package's own folder.
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, resource: str(
            Path(importlib.util.find_spec(package).submodule_search_locations[0]) / resource
        )
        sys.modules["pkg_resources"] = shim
        print("face_recognition: pkg_resources is missing, a one-function stand-in is used")
    try:
        import face_recognition
    except (ImportError, SystemExit) as error:
        print(f"face_recognition comparison skipped: import failed ({error})")
        return None
    return face_recognition


def _face_recognition_descriptor(face_recognition: types.ModuleType, image: np.ndarray):
    """face_recognition's descriptor of the largest HOG face, or of the whole photo if none."""
    boxes = face_recognition.face_locations(image, number_of_times_to_upsample=1, model="hog")
    if not boxes:
        boxes = [(0, image.shape[1], image.shape[0], 0)]
    largest = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
    return face_recognition.face_encodings(image, known_face_locations=[largest])[0]


if __name__ == "__main__":
    main()
