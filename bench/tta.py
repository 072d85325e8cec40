"""Test-time augmentation: each face's embedding averaged with its mirror image's (``--tta``).

On celeba299 (CelebA, Liu et al. ICCV 2015) and ORL chips (bench/_photos.py; pretrained
dlib-resnet), plain embeddings against mirror-averaged ones: 10-fold verification accuracy and
TAR at FAR 1e-3 on 20,000 seeded balanced pairs, one-shot rank-1 (first photo enrolled). Time per
face: FaceRecognizer.embed on batches of 64 chips, plain and with tta, against face_recognition's
plain encoding, which is dlib's: per face, the 5-point landmarks in its box, then
``compute_face_descriptor(image, landmarks)`` (face_recognition's ``face_encodings`` makes these
two calls; its package cannot be imported here, its models need pkg_resources), medians of 5
interleaved rounds.

    python bench/tta.py
"""

import statistics
import time

import dlib
import numpy as np
import torch
from _photos import CELEBA_CREDIT, Memo, as_hwc, machine, photos

from tripletface.evaluate import evaluate
from tripletface.finetune import pretrained_encoder
from tripletface.models.dlib_files import FACE_ENCODER, LANDMARKS_5, dlib_model_path
from tripletface.recognize import FaceRecognizer
from tripletface.tta import mirror_average, with_mirrors


class Mirrored:
    """An encoder for evaluate() answering mirror-averaged embeddings from the memo."""

    def __init__(self, memo: Memo) -> None:
        self.memo, self.input_size = memo, memo.model.input_size

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(mirror_average(self.memo(with_mirrors(as_hwc(images)))))


def timings(chips: np.ndarray, rounds: int = 5) -> dict[str, float]:
    """Median seconds per face of each way of embedding, rounds interleaved."""
    plain = FaceRecognizer("/nonexistent/unused.db")
    tta = FaceRecognizer("/nonexistent/unused.db", tta=True)
    landmarks = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_5)))
    network = dlib.face_recognition_model_v1(str(dlib_model_path(FACE_ENCODER)))
    box = dlib.rectangle(0, 0, chips.shape[2] - 1, chips.shape[1] - 1)

    def face_recognition_encodings():
        return [network.compute_face_descriptor(c, landmarks(c, box), 1) for c in chips]

    ways = {
        "tripletface": lambda: plain.embed(chips),
        "tripletface --tta": lambda: tta.embed(chips),
        "face_recognition": face_recognition_encodings,
    }
    times = {name: [] for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            tick = time.perf_counter()
            way()
            times[name].append((time.perf_counter() - tick) / len(chips))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    print(machine())
    start = time.perf_counter()
    memo = Memo(pretrained_encoder("dlib-resnet"), "dlib-resnet")
    for name in ("celeba299", "orl"):
        faces = photos(name, embed=memo)
        print(f"{name}" + (f" ({CELEBA_CREDIT})" if name == "celeba299" else ""))
        for label, encoder in (("plain", memo.encoder), ("tta (mirror)", Mirrored(memo))):
            report = evaluate(encoder, faces, pairs_count=20000)
            print(
                f"  {label:13} verification {100 * report.verification_accuracy:.2f}% "
                f"+- {100 * report.verification_accuracy_std:.2f}, TAR "
                f"{100 * report.val_at_far:.2f}% at FAR 1e-3, rank-1 {100 * report.rank1:.2f}% "
                f"({report.same_pairs} same / {report.different_pairs} different pairs, "
                f"{report.probes} probes)"
            )
        memo.save()
    chips = as_hwc(photos("celeba299", embed=memo).chips[:64])
    per_face = timings(chips)
    base = per_face["face_recognition"]
    print("time per face (64 chips, medians of 5 interleaved rounds):")
    for name, seconds in per_face.items():
        print(f"  {name:18} {1000 * seconds:6.2f} ms  ({base / seconds:.1f}x face_recognition)")
    print(f"{machine()}, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
