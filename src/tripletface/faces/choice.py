"""Which face of a labelled photo with several faces stands for its person: pure numpy rules.

The face nearest the photo's centre (LFW's convention, its photos framed on the labelled
person), the largest, or the face most similar to the person's other photos; on celeba299 the
last was best and the centre worst (bench/face_choice.py). Nothing here imports torch, so that
``tripletface calibrate`` chooses faces on the onnx runtime too.
"""

from collections.abc import Sequence

import numpy as np

#: How the face of a labelled photo with several faces is chosen (bench/face_choice.py).
FACE_RULES = ("centre", "largest", "similar")
#: The rule used unless another is asked for; without an encoder to compare with, "largest".
DEFAULT_FACE_RULE = "similar"


def centre_face(boxes: np.ndarray, shape: tuple[int, int]) -> int:
    """Index of the F x 4 box (left, top, right, bottom) whose centre is nearest the centre of
    an image of shape (height, width)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    middle = np.array([shape[1], shape[0]], dtype=np.float64) / 2
    return int(np.argmin(((centres - middle) ** 2).sum(axis=1)))


def largest_face(boxes: np.ndarray) -> int:
    """Index of the F x 4 box of largest area (the first of equals)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))


def similar_faces(embeddings: Sequence[np.ndarray], labels: Sequence[int]) -> list[int]:
    """For each photo (F_i x D unit-length face embeddings, a label), the index of its face
    with the smallest mean squared distance to the same person's other photos; -1 where a photo
    has several faces and its person no other photo, so that another rule must decide.

    The other photos count by their only face when they have one; a person whose other photos
    all have several faces is compared with all of their faces.
    """
    labels = np.asarray(labels)
    chosen = []
    for i, faces in enumerate(embeddings):
        if len(faces) == 1:
            chosen.append(0)
            continue
        others = [j for j in np.flatnonzero(labels == labels[i]) if j != i]
        single = [embeddings[j] for j in others if len(embeddings[j]) == 1]
        reference = single or [embeddings[j] for j in others]
        if not reference:
            chosen.append(-1)
            continue
        reference = np.concatenate(reference)
        squared = ((faces[:, None, :] - reference[None, :, :]) ** 2).sum(axis=2)
        chosen.append(int(np.argmin(squared.mean(axis=1))))
    return chosen
